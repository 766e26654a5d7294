//! `zhifu`: the one binary. Subcommands live in their own modules; this file
//! only parses the command line.

mod bench;
mod double11;
mod host;
mod load;
mod pg_local;
mod serve;

use clap::{Parser, Subcommand};

// The writer allocates and frees small objects (trades, events, chains) by
// the million: glibc's malloc took a fifth of its time at `double11 --scale
// 0.2` (perf; BENCHMARKS.md has the comparison).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Double11(args) => double11::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Bench { target } => bench::run(target),
        Command::LoadJournal(args) => load::run(&args),
    }
}
