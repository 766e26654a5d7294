//! `zhifu bench fund`: one day's Yu'e Bao yield for millions of holders,
//! and red-packet claims per second — durable, through the journal, with
//! the platform's real commands.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail, ensure};
use journal::{Durable, Options, StateMachine};
use ledger::LedgerConfig;
use platform::calendar::Date;
use platform::{Action, Command, Fen, Outcome, PartyKind, PartyNumber, Platform, SplitMode, Timestamp};

#[derive(clap::Args)]
pub struct FundBenchArgs {
    /// Fund holders (imported in commands of 1 million).
    #[arg(long, default_value_t = 10_000_000)]
    holders: u64,
    /// Red-packet claims to make (in packets of 1,000 shares).
    #[arg(long, default_value_t = 200_000)]
    claims: u64,
    /// Threads submitting claims concurrently.
    #[arg(long, default_value_t = 4)]
    submitters: usize,
    #[arg(long, default_value = "./zhifu-bench-data")]
    data_dir: PathBuf,
}

const SECOND: u64 = ledger::NANOS_PER_SECOND;
/// 2013-11-11T00:00:00+08:00.
const START: u64 = 1_384_099_200 * SECOND;
const SHARES_PER_PACKET: u32 = 1_000;
const IMPORT_PER_COMMAND: u64 = 1_000_000;

pub fn run(args: &FundBenchArgs) -> anyhow::Result<()> {
    ensure!(args.holders >= 1, "--holders must be at least 1");
    let directory = args.data_dir.join("bench-fund");
    if directory.exists() {
        std::fs::remove_dir_all(&directory).with_context(|| format!("clear {}", directory.display()))?;
    }
    println!("zhifu bench fund: Yu'e Bao's daily yield and red-packet claims, durable");
    println!("machine: {}", super::machine_line());
    println!("{} holders, {} red-packet claims, data in {}\n", args.holders, args.claims, directory.display());
    let options = Options {
        snapshot_every_records: u64::MAX,
        accounts_capacity: (2 * args.holders + 16) as usize,
        transfers_capacity: (2 * args.holders + args.claims + 16) as usize,
        ledger: LedgerConfig { id_horizon_ns: Some(30 * 86_400 * SECOND) },
        ..Options::default()
    };
    let (store, _) = Durable::<Platform>::open(&directory, options)?;
    let submit =
        |now: u64, action: Action| store.submit(Command { now: Timestamp::from_nanos(now), idempotency: None, action });

    let started = Instant::now();
    let bar = super::progress_bar(args.holders, "importing");
    let mut imported = 0;
    while imported < args.holders {
        let count = (args.holders - imported).min(IMPORT_PER_COMMAND);
        match submit(START + SECOND, Action::ImportFundHolders { count: count as u32, seed: imported })? {
            Outcome::HoldersImported { .. } => {}
            other => bail!("import failed: {other:?}"),
        }
        imported += count;
        bar.set_position(imported);
    }
    bar.finish_and_clear();
    println!("imported {} holders in {:.1} s (setup, not measured)", args.holders, started.elapsed().as_secs_f64());

    // The day ends; one command pays it.
    let date = Date { year: 2013, month: 11, day: 11 };
    let started = Instant::now();
    let outcome = submit(START + 86_400 * SECOND + SECOND, Action::FundYield { date, annual_rate_bps: 600 })?;
    let elapsed = started.elapsed();
    let Outcome::FundYieldPaid(day) = outcome else { bail!("yield failed: {outcome:?}") };
    store.read(|p| p.ledger().check_conservation()).map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "yield for {date} at 6.00%: {} holders paid {} fen (fund value {} fen) in {:.2} s, durable — {:.0} holders/s",
        day.holders_paid,
        day.income,
        day.fund_value,
        elapsed.as_secs_f64(),
        day.holders_paid as f64 / elapsed.as_secs_f64()
    );
    let again = Instant::now();
    let repeat = submit(START + 86_400 * SECOND + 2 * SECOND, Action::FundYield { date, annual_rate_bps: 600 })?;
    ensure!(matches!(&repeat, Outcome::FundYieldPaid(d) if *d == day), "a repeated date must change nothing");
    println!("the same date again: answered in {:.3} s, nothing paid twice", again.elapsed().as_secs_f64());

    red_packets(args, &store)?;
    store.shutdown();
    std::fs::remove_dir_all(&directory).with_context(|| format!("remove {}", directory.display()))?;
    Ok(())
}

fn red_packets(args: &FundBenchArgs, store: &Durable<Platform>) -> anyhow::Result<()> {
    let now = START + 2 * 86_400 * SECOND;
    let packets = args.claims.div_ceil(u64::from(SHARES_PER_PACKET));
    let sender = match store.submit(Command {
        now: Timestamp::from_nanos(now),
        idempotency: None,
        action: Action::CreateParty {
            kind: PartyKind::User,
            name: "sender".to_string(),
            key_hash: [7; 32],
            fee_rate_bps: None,
            webhook_url: None,
            webhook_secret: String::new(),
            app_public_key: None,
        },
    })? {
        Outcome::PartyCreated { number, .. } => number,
        other => bail!("{other:?}"),
    };
    store.submit(Command {
        now: Timestamp::from_nanos(now),
        idempotency: None,
        action: Action::TopUp { party: sender, amount: Fen::new(packets * 100_000), bank: "ICBC".into() },
    })?;
    let mut numbers = Vec::new();
    for _ in 0..packets {
        let action = Action::CreateRedPacket {
            sender,
            total: Fen::new(100_000),
            count: SHARES_PER_PACKET,
            mode: SplitMode::Random,
            greeting: None,
        };
        match store.submit(Command { now: Timestamp::from_nanos(now), idempotency: None, action })? {
            Outcome::RedPacketCreated { number, .. } => numbers.push(number),
            other => bail!("{other:?}"),
        }
    }
    // Holders are users 1..=holders; each claims one share of one packet.
    let claimers = args.holders.min(args.claims);
    let per_submitter = args.claims / args.submitters.max(1) as u64;
    let bar = super::progress_bar(per_submitter * args.submitters as u64, "claims");
    let started = Instant::now();
    let claimed: u64 = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..args.submitters.max(1) as u64)
            .map(|submitter| {
                let (numbers, bar) = (&numbers, &bar);
                scope.spawn(move || {
                    let mut ok = 0u64;
                    for k in 0..per_submitter {
                        let claim = submitter * per_submitter + k;
                        let packet = numbers[(claim / u64::from(SHARES_PER_PACKET)) as usize % numbers.len()];
                        let user = PartyNumber::new(1 + claim % claimers);
                        let outcome = store.submit(Command {
                            now: Timestamp::from_nanos(now),
                            idempotency: None,
                            action: Action::ClaimRedPacket { packet, user },
                        });
                        if matches!(outcome, Ok(Outcome::RedPacketClaimed { .. })) {
                            ok += 1;
                        }
                        bar.inc(1);
                    }
                    ok
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
    });
    bar.finish_and_clear();
    let elapsed = started.elapsed();
    store.read(|p| p.ledger().check_conservation()).map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "red packets: {claimed} claims of {} made in {:.2} s — {:.0} durable claims/s ({} submitters, one command each)",
        per_submitter * args.submitters as u64,
        elapsed.as_secs_f64(),
        claimed as f64 / elapsed.as_secs_f64(),
        args.submitters
    );
    Ok(())
}
