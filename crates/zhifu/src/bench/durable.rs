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

use super::postgres::{self, BaselineReport};
use super::workload::{self, Payments, Shape};
use crate::pg_local::LocalPostgres;

/// Where a run's log is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreChoice {
    Embedded,
    /// A local PostgreSQL started for the run, without or with a synchronous standby.
    LocalPostgres {
        synchronous_standby: bool,
    },
    Url(String),
}

impl StoreChoice {
    pub fn parse(text: &str) -> anyhow::Result<StoreChoice> {
        Ok(match text {
            "embedded" => StoreChoice::Embedded,
            "postgres" => StoreChoice::LocalPostgres { synchronous_standby: false },
            "postgres-sync" => StoreChoice::LocalPostgres { synchronous_standby: true },
            url if url.starts_with("postgres://") || url.starts_with("postgresql://") || url.contains("host=") => {
                StoreChoice::Url(url.to_string())
            }
            other => bail!("--store {other}: use embedded, postgres, postgres-sync or a PostgreSQL URL"),
        })
    }

    fn name(&self) -> &'static str {
        match self {
            StoreChoice::Embedded => "embedded",
            StoreChoice::LocalPostgres { synchronous_standby: false } => "postgres",
            StoreChoice::LocalPostgres { synchronous_standby: true } => "postgres+sync standby",
            StoreChoice::Url(_) => "postgres (given)",
        }
    }
}

/// A store's servers, kept for all of its runs.
struct StoreServers {
    url: Option<String>,
    _primary: Option<LocalPostgres>,
    _standby: Option<LocalPostgres>,
}

impl StoreServers {
    fn start(choice: &StoreChoice) -> anyhow::Result<StoreServers> {
        let none = StoreServers { url: None, _primary: None, _standby: None };
        match choice {
            StoreChoice::Embedded => Ok(none),
            StoreChoice::Url(url) => Ok(StoreServers { url: Some(url.clone()), ..none }),
            StoreChoice::LocalPostgres { synchronous_standby } => {
                let bin = LocalPostgres::find_bin().context("--store postgres needs PostgreSQL installed")?;
                let primary = LocalPostgres::start(&bin, &std::env::temp_dir())?;
                let standby = if *synchronous_standby {
                    let standby = LocalPostgres::standby_of(&primary, &std::env::temp_dir(), "standby")?;
                    primary.require_synchronous("standby")?;
                    Some(standby)
                } else {
                    None
                };
                Ok(StoreServers { url: Some(primary.url()), _primary: Some(primary), _standby: standby })
            }
        }
    }

    /// The journal of one run, on an empty log.
    fn open(&self, directory: &std::path::Path, options: Options) -> anyhow::Result<DurableLedger> {
        let Some(url) = &self.url else { return Ok(DurableLedger::open(directory, options)?.0) };
        let mut client = ::postgres::Client::connect(url, ::postgres::NoTls).context("connect to the store")?;
        client
            .batch_execute("DROP TABLE IF EXISTS zhifu_log, zhifu_leader, zhifu_schema")
            .context("empty the store")?;
        let log = journal::PostgresLog::connect(url, "zhifu bench", journal::postgres_lease_default())?;
        let (store, _) = DurableLedger::open_with(directory, Box::new(log), options)?;
        store.wait_to_lead(Duration::from_secs(30))?;
        Ok(store)
    }
}

pub struct DurableArgs {
    pub accounts: u64,
    pub transfers: u64,
    pub batch: usize,
    pub shapes: Vec<Shape>,
    pub seed: u64,
    pub submitters: usize,
    pub data_dir: PathBuf,
    /// The baseline's PostgreSQL; `None`: start a local one if installed.
    pub postgres: Option<String>,
    pub postgres_transfers: u64,
    pub postgres_clients: usize,
    pub stores: Vec<StoreChoice>,
}

struct DurableReport {
    store: &'static str,
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
    for store in &args.stores {
        let servers = StoreServers::start(store)?;
        for &shape in &args.shapes {
            reports.push(run_workload(args, store.name(), &servers, shape)?);
        }
    }
    let baselines = run_baselines(args)?;
    println!(
        "{:<22} {:<26} {:>10} {:>14} {:>10} {:>10} {:>10} {:>12}",
        "store", "workload", "transfers", "durable/s", "batch p50", "batch p99", "p999", "batches/commit"
    );
    for report in &reports {
        let h = &report.latency_us;
        println!(
            "{:<22} {:<26} {:>10} {:>14.0} {:>8}us {:>8}us {:>8}us {:>12.1}",
            report.store,
            report.shape.name(),
            report.transfers,
            report.transfers as f64 / report.elapsed.as_secs_f64().max(f64::MIN_POSITIVE),
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            report.batches as f64 / report.groups.max(1) as f64,
        );
    }
    println!("(batch latency: from submit until durable and applied; one fdatasync per group)\n");
    let Some((where_from, baselines)) = baselines else {
        println!("PostgreSQL baseline skipped: no PostgreSQL found (give --postgres URL, or install postgresql)");
        return Ok(());
    };
    println!(
        "baseline: naive PostgreSQL ({where_from}), one transaction per transfer, {} clients",
        args.postgres_clients
    );
    println!(
        "{:<26} {:>10} {:>14} {:>10} {:>10} {:>10} {:>12}",
        "workload", "transfers", "transfers/s", "p50", "p99", "p999", "zhifu/pg"
    );
    for (report, baseline) in reports.iter().filter(|report| report.store == reports[0].store).zip(&baselines) {
        let h = &baseline.latency_us;
        let baseline_rate = baseline.transfers as f64 / baseline.elapsed.as_secs_f64().max(f64::MIN_POSITIVE);
        let zhifu_rate = report.transfers as f64 / report.elapsed.as_secs_f64().max(f64::MIN_POSITIVE);
        println!(
            "{:<26} {:>10} {:>14.0} {:>8}us {:>8}us {:>8}us {:>11.0}x",
            report.shape.name(),
            baseline.transfers,
            baseline_rate,
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            zhifu_rate / baseline_rate,
        );
    }
    println!("(latency per transfer; zhifu/pg: durable transfers/s of zhifu over PostgreSQL's, same workload)");
    for store in args.stores.iter().skip(1) {
        let ratios: Vec<String> = reports
            .iter()
            .filter(|report| report.store == store.name())
            .zip(&baselines)
            .map(|(report, baseline)| {
                let zhifu = report.transfers as f64 / report.elapsed.as_secs_f64().max(f64::MIN_POSITIVE);
                let naive = baseline.transfers as f64 / baseline.elapsed.as_secs_f64().max(f64::MIN_POSITIVE);
                format!("{:.0}x ({})", zhifu / naive, report.shape.name())
            })
            .collect();
        println!("zhifu on {} over the naive ledger: {}", store.name(), ratios.join(", "));
    }
    Ok(())
}

/// The naive PostgreSQL baseline for each workload, or `None` when there
/// is no PostgreSQL to run it against.
fn run_baselines(args: &DurableArgs) -> anyhow::Result<Option<(String, Vec<BaselineReport>)>> {
    let (url, server, where_from) = match &args.postgres {
        Some(url) => (url.clone(), None, "given by --postgres".to_string()),
        None => match LocalPostgres::find_bin() {
            Some(bin) => {
                let server = LocalPostgres::start(&bin, &std::env::temp_dir())?;
                (server.url(), Some(server), format!("local server from {}, default settings", bin.display()))
            }
            None => return Ok(None),
        },
    };
    let mut baselines = Vec::new();
    for &shape in &args.shapes {
        let transfers = args.postgres_transfers;
        baselines.push(postgres::run(&url, args.accounts, transfers, shape, args.postgres_clients, args.seed)?);
    }
    drop(server);
    Ok(Some((where_from, baselines)))
}

fn run_workload(
    args: &DurableArgs,
    store_name: &'static str,
    servers: &StoreServers,
    shape: Shape,
) -> anyhow::Result<DurableReport> {
    if args.batch == 0 || args.batch > BATCH_EVENTS_MAX {
        bail!("--batch must be between 1 and {BATCH_EVENTS_MAX}");
    }
    let directory = args.data_dir.join(format!("bench-{}", shape.name().split(' ').next().unwrap_or("run")));
    if directory.exists() {
        std::fs::remove_dir_all(&directory).with_context(|| format!("clear {}", directory.display()))?;
    }
    // Snapshots are left out of this measurement (they are the recovery
    // benchmark's subject): the log alone is what acknowledges a transfer.
    // The ledger is sized for the run, as in the in-memory benchmark.
    let options = Options {
        snapshot_every_records: u64::MAX,
        accounts_capacity: args.accounts as usize + 1,
        transfers_capacity: (args.transfers + args.accounts) as usize,
        ..Options::default()
    };
    let store = servers.open(&directory, options)?;
    let mut timestamp = 1u64;
    for chunk in workload::accounts(args.accounts).chunks(BATCH_EVENTS_MAX) {
        store.submit(Batch { timestamp, command: Command::CreateAccounts(chunk.to_vec()) })?;
        timestamp += 1;
    }
    for chunk in workload::opening_topups(args.accounts).chunks(BATCH_EVENTS_MAX) {
        store.submit(Batch { timestamp, command: Command::CreateTransfers(chunk.to_vec()) })?;
        timestamp += 1;
    }
    let before = store.stats();
    let latency_us = Mutex::new(Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).context("histogram")?);
    let per_submitter = args.transfers / args.submitters as u64;
    let bar =
        super::progress_bar(per_submitter * args.submitters as u64, shape.name().split(' ').next().unwrap_or("run"));
    let started = Instant::now();
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let mut handles = Vec::new();
        for submitter in 0..args.submitters {
            let (store, latency_us, bar) = (&store, &latency_us, &bar);
            handles.push(scope.spawn(move || -> anyhow::Result<()> {
                let first_id = 1 + u128::from(submitter as u64) * (1 << 40);
                let mut payments = Payments::starting_at(args.seed + submitter as u64, shape, args.accounts, first_id);
                let mut sent = 0u64;
                let mut batch = Vec::with_capacity(args.batch);
                while sent < per_submitter {
                    let count = (per_submitter - sent).min(args.batch as u64) as usize;
                    payments.fill(&mut batch, count);
                    let submitted = Instant::now();
                    let outcome =
                        store.submit(Batch { timestamp: 0, command: Command::CreateTransfers(batch.clone()) })?;
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
            handle.join().map_err(|_| anyhow::anyhow!("a submitter panicked"))??;
        }
        Ok(())
    })?;
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    let after = store.stats();
    println!(
        "{store_name}, {}: slowest group append (durable) {} us, slowest group apply {} us",
        shape.name(),
        after.append_us_max,
        after.apply_us_max
    );
    store.read(|ledger| ledger.check_conservation()).map_err(|e| anyhow::anyhow!("{e}"))?;
    store.shutdown();
    std::fs::remove_dir_all(&directory).with_context(|| format!("remove {}", directory.display()))?;
    let latency_us = latency_us.into_inner().map_err(|_| anyhow::anyhow!("latency lock poisoned"))?;
    Ok(DurableReport {
        store: store_name,
        shape,
        transfers: per_submitter * args.submitters as u64,
        elapsed,
        latency_us,
        groups: after.groups - before.groups,
        batches: after.batches - before.batches,
    })
}
