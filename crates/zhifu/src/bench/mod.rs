//! `zhifu bench …`: benchmarks that print what they measured and the machine
//! they ran on, in a form that can be pasted into BENCHMARKS.md.

mod console;
mod durable;
mod fund;
mod http;
mod ledger;
mod loans;
mod postgres;
mod recovery;
pub mod workload;

use clap::Subcommand;

#[derive(Subcommand)]
pub enum BenchTarget {
    /// The in-memory ledger state machine on one core.
    Ledger(ledger::LedgerBenchArgs),
    /// A zhifu serve process on loopback under concurrent requests.
    Http(http::HttpBenchArgs),
    /// The console's and the portal's pages with many trades in the store.
    Console(console::ConsoleBenchArgs),
    /// Yu'e Bao's daily yield for millions of holders, and red-packet claims.
    Fund(fund::FundBenchArgs),
    /// A day's interest accrual over a million active loans.
    Loans(loans::LoansBenchArgs),
    /// Store many transfers durably, restart, and time the recovery.
    Recovery(recovery::RecoveryBenchArgs),
}

pub fn run(target: BenchTarget) -> anyhow::Result<()> {
    match target {
        BenchTarget::Ledger(args) => ledger::run(&args),
        BenchTarget::Recovery(args) => recovery::run(&args),
        BenchTarget::Http(args) => http::run(&args),
        BenchTarget::Console(args) => console::run(&args),
        BenchTarget::Fund(args) => fund::run(&args),
        BenchTarget::Loans(args) => loans::run(&args),
    }
}

/// The machine, as a line for a benchmark report.
pub fn machine_line() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split(':').nth(1))
                .map(|name| name.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".to_string());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory_gib = crate::host::memory_total_bytes().unwrap_or(0) as f64 / (1024.0 * 1024.0 * 1024.0);
    format!("{cpu}, {cores} cores, {memory_gib:.0} GiB")
}

pub fn progress_bar(total: u64, what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total);
    let style =
        indicatif::ProgressStyle::with_template("{prefix:>12} [{bar:40}] {human_pos}/{human_len} {per_sec} eta {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(what.to_string());
    bar
}
