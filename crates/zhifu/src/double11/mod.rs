//! `zhifu double11`: lives through a Double Eleven shaped like 2013's and
//! reports how the platform held.
//!
//! - [`sim`] generates the day, deterministic from `--seed`.
//! - `engine` drives it through the platform and durable store in process
//!   (the code `zhifu serve` runs); `http` drives a running server instead.
//! - `tally` measures as the answers arrive; `report` and `charts` write the
//!   terminal summary, `report.json`, `report.html` and PNG charts.
//!
//! A run's data directory remembers its seed and scale: started again after
//! a crash (`--crash-at` makes one), the run resumes from what is durable.

mod charts;
mod engine;
mod http;
mod paid;
mod progress;
mod replies;
mod report;
mod tally;

use std::fs;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use sim::{SimConfig, Workload};

use crate::host;
use progress::Progress;
use tally::Tally;

/// 2013-11-11T00:00:00+08:00, in nanoseconds since the Unix epoch.
pub const DAY_START_NANOS: u64 = 1_384_099_200 * ledger::NANOS_PER_SECOND;
const MANIFEST: &str = "double11.run";

#[derive(clap::Args)]
pub struct Double11Args {
    /// Share of 2013's day to replay: 1 is the full day (188 million
    /// payments, 35 billion yuan); the default (940,000 payments) takes about
    /// half a minute on 2 cores.
    #[arg(long, default_value_t = 0.005)]
    scale: f64,
    /// The same seed gives the same day, payment for payment.
    #[arg(long, default_value_t = 11)]
    seed: u64,
    /// `embedded` (the log in --data-dir), or a PostgreSQL URL whose log
    /// is empty or holds this run (snapshots, history and archive stay in
    /// --data-dir).
    #[arg(long, default_value = "embedded")]
    store: String,
    /// Where the embedded store keeps the run (resumed if it is unfinished).
    #[arg(long, default_value = "./double11-data")]
    data_dir: PathBuf,
    /// Where the report (report.html, report.json, PNG charts) is written.
    #[arg(long, default_value = "./double11-report")]
    report_dir: PathBuf,
    /// Drive a running `zhifu serve` at this URL over HTTP instead (needs its admin key).
    #[arg(long)]
    target: Option<String>,
    /// The admin key of the server given by --target.
    #[arg(long, env = "ZHIFU_ADMIN_KEY", hide_env_values = true)]
    admin_key: Option<String>,
    /// Concurrent HTTP clients with --target.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Kill the process once this percentage of the payments is submitted
    /// (fault injection); run again to resume from what is durable.
    #[arg(long)]
    crash_at: Option<f64>,
    /// Discard an unfinished run in the data directory and start again.
    #[arg(long)]
    fresh: bool,
    /// No progress (a bar on a terminal, otherwise a line a minute).
    #[arg(long)]
    quiet: bool,
    /// How often the run notes how far it got, for a resume to skip to.
    #[arg(long, hide = true, default_value_t = engine::CHECKPOINT_INTERVAL_DEFAULT.as_millis() as u64)]
    checkpoint_every_ms: u64,
    /// Kill the process once this settlement tick (after the day) is answered.
    #[arg(long, hide = true)]
    crash_in_settlement: Option<u64>,
}

/// One of the platform's own checks of its books against the ledger.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlatformCheck {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

/// What the ledger and the platform's records say once the run is over.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LedgerFigures {
    /// `Platform::check_invariants` and `check_trades`.
    pub platform_checks: Vec<PlatformCheck>,
    pub paid_trades: u64,
    /// Sum of the amounts of paid trades, in fen.
    pub gmv_paid: u128,
    /// Sum of the amounts of settled trades (paid out to the merchant).
    pub gmv_settled: u128,
    /// Paid trades neither settled nor closed (should be none at the end).
    pub unsettled_trades: u64,
    /// Paid trades refunded in full before they settled: their amounts.
    pub closed_unsettled: u128,
    pub discounts: u128,
    pub refunded: u128,
    pub trade_fees: u128,
    /// The revenue account in the ledger.
    pub revenue: u128,
    /// What the ledger's escrow account holds: zero once every trade has settled.
    pub escrow_balance: u128,
    pub debits_posted: u128,
    pub credits_posted: u128,
    pub conserved: bool,
}

pub struct RunOutput {
    pub tally: Tally,
    /// Read from the platform in process (not available over HTTP).
    pub figures: Option<LedgerFigures>,
    pub digest: Option<u64>,
    pub resumed_after_commands: u64,
    /// Of the workload's operations, those a resumed run skipped by count.
    pub resume_skipped_operations: u64,
    /// The journal's writer: commands, group commits (each one write and
    /// one fdatasync), the bytes the log carries, snapshots, and the
    /// longest waits it caused (in process only).
    pub writer: journal::WriterStats,
    pub wall: Duration,
    /// Over HTTP: the server's own ledger check (balanced, and what it says).
    pub server_check: Option<(bool, String)>,
}

pub fn run(args: Double11Args) -> anyhow::Result<()> {
    let config = SimConfig { seed: args.seed, scale: args.scale };
    let workload = Workload::new(&config).map_err(|error| anyhow::anyhow!("--scale: {error}"))?;
    if let Some(share) = args.crash_at
        && !(share > 0.0 && share < 100.0)
    {
        bail!("--crash-at must be a percentage between 0 and 100 (exclusive)");
    }
    let plan = workload.plan().clone();
    let display = match (args.quiet, std::io::stderr().is_terminal()) {
        (true, _) => progress::Display::Nothing,
        (false, true) => progress::Display::Bar,
        (false, false) => progress::Display::Lines,
    };
    println!(
        "zhifu double11: seed {}, scale {} of 2013's day: {} payments planned, {} merchants, {} buyers",
        args.seed,
        args.scale,
        format_count(plan.payments),
        format_count(u64::from(plan.merchants)),
        format_count(u64::from(plan.buyers)),
    );
    let progress = Progress::new(plan.payments, display);
    let output = match &args.target {
        Some(url) => {
            let admin_key = args.admin_key.clone().context("--target needs the server's --admin-key")?;
            http::run(
                workload,
                &http::HttpOptions { url, admin_key: &admin_key, connections: args.connections },
                &progress,
            )?
        }
        None => {
            let store = crate::serve::store_of(&args.store)?;
            if args.fresh && store != server::StoreConfig::Embedded {
                bail!("--fresh cannot discard a run's log in PostgreSQL: give an empty database instead");
            }
            prepare_data_dir(&args.data_dir, &config, args.fresh, plan.payments)?;
            let options = engine::EngineOptions {
                store: &store,
                data_dir: &args.data_dir,
                seed: args.seed,
                crash_at_share: args.crash_at.map(|percent| percent / 100.0),
                checkpoint_every: Duration::from_millis(args.checkpoint_every_ms),
                crash_in_settlement: args.crash_in_settlement,
            };
            let output = engine::run(workload, &options, &progress)?;
            fs::write(args.data_dir.join(MANIFEST), manifest(&config, true))
                .with_context(|| format!("mark the run finished in {}", args.data_dir.display()))?;
            output
        }
    };
    let summary = report::Summary { config, plan, target: args.target.clone(), output };
    print!("{}", report::terminal(&summary));
    let written = report::write(&args.report_dir, &summary)?;
    println!("report: {}", written.display());
    if !summary.checks().iter().all(|check| check.passed) {
        bail!("the run does not reconcile (see the checks above)");
    }
    Ok(())
}

/// The most a run's data directory holds, per planned payment, erring
/// high (a run refused at its start costs nothing; one out of disk at the
/// day's end costs hours): the full day peaked at 70.2 and 70.3 GB, at its
/// end (BENCHMARKS.md, "The full day again" and "The full day with smaller
/// indexes"); 400 bytes a payment is 75 GB.
const DISK_BYTES_PER_PAYMENT: u64 = 400;
/// A run's peak resident memory: a fixed part and a part per planned
/// payment (BENCHMARKS.md: `--scale 0.1` 1.91 GB, the full day 13.3 GB).
const MEMORY_BYTES_BASE: u64 = 650_000_000;
const MEMORY_BYTES_PER_PAYMENT: u64 = 67;

/// Refuses a run the disk cannot hold (it would fail hours in, at the end
/// of the day), and warns of one larger than the machine's memory. What is
/// in the data directory counts as room: a resumed run's, or a finished
/// one's, which is removed.
fn check_room(dir: &Path, payments: u64) -> anyhow::Result<()> {
    let present = host::directory_bytes(dir).with_context(|| format!("measure {}", dir.display()))?;
    let free = host::free_disk_bytes(dir).with_context(|| format!("ask for the free space of {}", dir.display()))?;
    if let Some(message) = disk_shortfall(payments, present, free) {
        bail!("{message} in {}: give another --data-dir or a smaller --scale", dir.display());
    }
    let peak = MEMORY_BYTES_BASE.saturating_add(payments.saturating_mul(MEMORY_BYTES_PER_PAYMENT));
    if let Some(total) = host::memory_total_bytes()
        && peak > total
    {
        eprintln!(
            "warning: a run of this scale peaks at about {} of memory and this machine has {}; \
             it may be stopped for want of memory (a smaller --scale fits)",
            format_gb(peak),
            format_gb(total)
        );
    }
    Ok(())
}

/// Why `free` bytes of disk (with `present` bytes already in the data
/// directory, a run being resumed) are too few for `payments`, if they are.
fn disk_shortfall(payments: u64, present: u64, free: u64) -> Option<String> {
    let needed = payments.saturating_mul(DISK_BYTES_PER_PAYMENT);
    let room = free.saturating_add(present);
    (room < needed)
        .then(|| format!("a run of this scale needs about {} of disk and has {}", format_gb(needed), format_gb(room)))
}

fn format_gb(bytes: u64) -> String {
    format!("{:.1} GB", bytes as f64 / 1e9)
}

fn manifest(config: &SimConfig, finished: bool) -> String {
    format!("seed={}\nscale={}\nfinished={finished}\n", config.seed, config.scale)
}

/// Makes the data directory ready: new, resumed (same seed and scale,
/// unfinished), or started again (a finished run, or `--fresh`) — once it
/// is known to have room for `payments` (a refused run changes nothing).
fn prepare_data_dir(dir: &Path, config: &SimConfig, fresh: bool, payments: u64) -> anyhow::Result<()> {
    let manifest_path = dir.join(MANIFEST);
    let existing = fs::read_to_string(&manifest_path).ok();
    let has_files = fs::read_dir(dir).map(|mut entries| entries.next().is_some()).unwrap_or(false);
    let start_again = match existing {
        None if has_files => bail!("{} is not empty and holds no double11 run; give another --data-dir", dir.display()),
        None => false,
        Some(text) => {
            let finished = text.contains("finished=true");
            let same = text == manifest(config, false) || text == manifest(config, true);
            if !finished && !same && !fresh {
                bail!(
                    "{} holds an unfinished run with other settings ({}); run with those to resume it, \
                     or add --fresh to discard it",
                    dir.display(),
                    text.lines().take(2).collect::<Vec<_>>().join(", ")
                );
            }
            finished || fresh
        }
    };
    check_room(dir, payments)?;
    if start_again {
        // Under the journal's lock: a run still going in another process
        // keeps its files (and the lock file stays, for it to go on holding).
        let _lock = journal::lock_directory(dir)?;
        remove_run(dir)?;
    }
    fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    if !manifest_path.exists() {
        fs::write(&manifest_path, manifest(config, false))
            .with_context(|| format!("write {}", manifest_path.display()))?;
    }
    Ok(())
}

/// Removes what a run leaves in its data directory, and nothing else.
fn remove_run(dir: &Path) -> anyhow::Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))? {
        let path = entry?.path();
        let name = path.file_name().and_then(|name| name.to_str()).unwrap_or_default().to_string();
        let ours = name == MANIFEST
            || name == "FORMAT"
            || name == "history.log"
            || name == "history.idx"
            || name == "archive.log"
            || name == "archive.idx"
            || name == engine::CHECKPOINT_FILE
            || name.starts_with("wal-")
            || name.starts_with("snapshot-");
        if ours {
            fs::remove_file(&path).with_context(|| format!("remove {}", path.display()))?;
        }
    }
    Ok(())
}

/// `HH:MM:SS` of the simulated day (past midnight: `+Nd HH:MM:SS`).
pub fn format_clock(nanos_into_day: u64) -> String {
    let seconds = nanos_into_day / ledger::NANOS_PER_SECOND;
    let (days, rest) = (seconds / 86_400, seconds % 86_400);
    let clock = format!("{:02}:{:02}:{:02}", rest / 3_600, rest / 60 % 60, rest % 60);
    if days == 0 { clock } else { format!("+{days}d {clock}") }
}

/// 1234567 → "1,234,567".
pub fn format_count(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// Fen as yuan: 123456789 → "¥1,234,567.89".
pub fn format_yuan(fen: u128) -> String {
    let yuan = u64::try_from(fen / 100).unwrap_or(u64::MAX);
    format!("¥{}.{:02}", format_count(yuan), fen % 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_as_people_write_them() {
        assert_eq!(format_count(0), "0");
        assert_eq!(format_count(999), "999");
        assert_eq!(format_count(1_000), "1,000");
        assert_eq!(format_count(188_000_000), "188,000,000");
        assert_eq!(format_yuan(3_501_900_000_000), "¥35,019,000,000.00");
        assert_eq!(format_yuan(5), "¥0.05");
        assert_eq!(format_clock(367 * 1_000_000_000), "00:06:07");
        assert_eq!(format_clock((86_400 + 61) * 1_000_000_000), "+1d 00:01:01");
    }

    #[test]
    fn a_disk_too_small_for_the_run_is_named_before_it_starts() {
        let full_day = 188_000_000;
        let needed = full_day * DISK_BYTES_PER_PAYMENT;
        let message = disk_shortfall(full_day, 0, needed - 1).expect("one byte short");
        assert!(message.contains(&format_gb(needed)), "{message}");
        assert_eq!(disk_shortfall(full_day, 0, needed), None);
        assert_eq!(disk_shortfall(full_day, needed / 2, needed / 2), None, "a resumed run has part of it already");
        assert_eq!(disk_shortfall(940_000, 0, 2_000_000_000), None, "the default scale needs under 2 GB");
    }
}
