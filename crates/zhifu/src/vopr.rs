//! `zhifu vopr`: the whole-platform simulator (`sim::vopr`) from the command
//! line. One seed for a fixed number of steps, or seed after seed until a
//! time is up; each run prints `vopr seed=S steps=N commands=C restarts=R
//! crashes=K faults=F digest=<hex>`, and a failure prints its seed and step (replay it with
//! `--seed S --steps N`) and exits non-zero.

use std::time::{Duration, Instant};

use anyhow::bail;
use sim::vopr::Vopr;

#[derive(clap::Args)]
pub struct VoprArgs {
    /// The first seed (a run of several seeds takes the next ones).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Steps per seed.
    #[arg(long, default_value_t = 2_000)]
    steps: u64,
    /// How many seeds to run.
    #[arg(long, default_value_t = 1)]
    seeds: u64,
    /// Run seed after seed for this many minutes instead (ignores `--seeds`).
    #[arg(long)]
    minutes: Option<u64>,
    /// Print the answers of each run by kind (what it exercised).
    #[arg(long)]
    answers: bool,
}

pub fn run(args: &VoprArgs) -> anyhow::Result<()> {
    name_the_seed_on_panic();
    let deadline = args.minutes.map(|minutes| Instant::now() + Duration::from_secs(minutes * 60));
    let mut seed = args.seed;
    let mut ran = 0u64;
    let mut commands = 0u64;
    let started = Instant::now();
    loop {
        let more = match deadline {
            Some(deadline) => Instant::now() < deadline,
            None => ran < args.seeds,
        };
        if !more {
            break;
        }
        let outcome = Vopr::new(seed).and_then(|vopr| vopr.run(args.steps));
        let report = match outcome {
            Ok(report) => report,
            Err(failure) => {
                bail!("{failure} (replay: zhifu vopr --seed {} --steps {})", failure.seed, failure.step);
            }
        };
        println!(
            "vopr seed={seed} steps={} commands={} restarts={} crashes={} faults={} digest={:016x}",
            report.steps, report.commands, report.restarts, report.crashes, report.faults, report.digest
        );
        if args.answers {
            for (kind, count) in &report.answers {
                println!("  {count:>8} {kind}");
            }
        }
        commands += report.commands;
        ran += 1;
        seed = seed.wrapping_add(1);
    }
    let seconds = started.elapsed().as_secs_f64();
    println!("vopr: {ran} seeds of {} steps ({commands} commands) passed in {seconds:.1} s", args.steps);
    Ok(())
}

/// A broken invariant panics in the writer and stops the process: say first
/// which seed and step did it, so that the run can be replayed.
fn name_the_seed_on_panic() {
    let stop = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let (seed, step) = sim::vopr::position();
        eprintln!("vopr seed={seed} step={step}: panicked (replay: zhifu vopr --seed {seed} --steps {step})");
        stop(info);
    }));
}
