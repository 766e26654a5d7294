//! `zhifu recover`: opens a data directory (and its store) as a starting
//! node would, without taking writes or the lead, and prints what it holds:
//! `sequence=<last record> digest=<hex>`, and on stderr how long opening
//! took. Replicated-store tests compare a follower's state with a fresh
//! replay of the PostgreSQL log this way.

use std::path::PathBuf;

use anyhow::Context;
use journal::{Journal, Options};
use platform::Platform;

#[derive(clap::Args)]
pub struct RecoverArgs {
    #[arg(long)]
    data_dir: PathBuf,
    /// `embedded`, or the PostgreSQL URL the directory's node used.
    #[arg(long, default_value = "embedded")]
    store: String,
}

pub fn run(args: &RecoverArgs) -> anyhow::Result<()> {
    let recovered = match crate::serve::store_of(&args.store)? {
        server::StoreConfig::Embedded => Journal::<Platform>::open(&args.data_dir, Options::default()),
        server::StoreConfig::Postgres { url } => {
            let log = journal::PostgresLog::connect(&url, "zhifu recover", journal::postgres_lease_default())
                .context("connect to the store")?;
            Journal::<Platform>::open_with(&args.data_dir, Box::new(log), Options::default())
        }
    }
    .with_context(|| format!("recover {}", args.data_dir.display()))?;
    let (_, platform, report) = recovered;
    // On stderr, so that stdout stays the one line tests compare.
    eprintln!(
        "opened in {:.1} s: the snapshot at record {} read in {:.1} s, then {} records replayed in {:.1} s",
        (report.snapshot_read + report.replay).as_secs_f64(),
        report.snapshot_sequence.unwrap_or(0),
        report.snapshot_read.as_secs_f64(),
        report.records_replayed,
        report.replay.as_secs_f64(),
    );
    let digest = journal::digest(&platform).context("digest the recovered state")?;
    println!("sequence={} digest={digest:016x}", report.last_sequence);
    Ok(())
}
