//! `zhifu`: the one binary. Subcommands live in their own modules; this file
//! only parses the command line.

mod bench;
mod double11;
mod host;
mod load;
mod pg_local;
mod recover;
mod serve;
mod vopr;

use clap::{Parser, Subcommand};

// The writer allocates and frees small objects (trades, events, chains) by
// the million: glibc's malloc took a fifth of its time at `double11 --scale
// 0.2` (perf; BENCHMARKS.md has the comparison).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A panic anywhere — the writer applying a command, a check of an
/// invariant — means state can no longer be trusted: the whole process
/// stops, loudly and with a non-zero status, rather than serving what may
/// be a half-applied state (a panicking thread alone would leave the rest
/// running). The release build aborts on panic anyway (`panic = "abort"`).
fn stop_on_panic() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        eprintln!(
            "zhifu: stopping: a panic means the state can no longer be trusted (restart to recover from the journal)"
        );
        std::process::abort();
    }));
}

#[derive(Parser)]
#[command(name = "zhifu", version, about = "zhifu (支付): an Alipay-style payment platform")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Live through a Double Eleven shaped like 2013's and report how it held.
    Double11(double11::Double11Args),
    /// Run the HTTP API (see ../shared/API.md).
    Serve(serve::ServeArgs),
    /// Measure parts of zhifu.
    Bench {
        #[command(subcommand)]
        target: bench::BenchTarget,
    },
    /// Write batches to a durable ledger until stopped, printing each one
    /// acknowledged (used by the crash test).
    #[command(hide = true)]
    LoadJournal(load::LoadArgs),
    /// Recover a data directory (and its store) without taking writes, and
    /// print its last sequence and digest (used by the replication tests).
    #[command(hide = true)]
    Recover(recover::RecoverArgs),
    /// Simulate the whole platform from a seed, with crashes and restarts,
    /// checking its books after every step (see docs/testing.md).
    Vopr(vopr::VoprArgs),
}

fn main() -> anyhow::Result<()> {
    stop_on_panic();
    let cli = Cli::parse();
    match cli.command {
        Command::Double11(args) => double11::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Bench { target } => bench::run(target),
        Command::LoadJournal(args) => load::run(&args),
        Command::Recover(args) => recover::run(&args),
        Command::Vopr(args) => vopr::run(&args),
    }
}
