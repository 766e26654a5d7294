//! `zhifu bench loans`: one day's interest accrual over a million active
//! loans — the platform's `Tick`, applied by the state machine in process
//! (the command itself is a few bytes in the journal; what costs is this).

use std::time::Instant;

use anyhow::{bail, ensure};
use journal::StateMachine;
use ledger::LedgerConfig;
use platform::{Action, Command, Fen, NewTrade, Outcome, PartyKind, PaySource, Platform, Timestamp};

#[derive(clap::Args)]
pub struct LoansBenchArgs {
    /// Active loans.
    #[arg(long, default_value_t = 1_000_000)]
    loans: u64,
    /// Merchants they are spread over (each with trade history for its credit line).
    #[arg(long, default_value_t = 1_000)]
    merchants: u64,
}

const SECOND: u64 = ledger::NANOS_PER_SECOND;
const DAY: u64 = 86_400 * SECOND;
/// 2013-11-11T00:00:00+08:00.
const START: u64 = 1_384_099_200 * SECOND;

pub fn run(args: &LoansBenchArgs) -> anyhow::Result<()> {
    ensure!(args.merchants >= 1 && args.loans >= args.merchants, "--loans must be at least --merchants");
    println!("zhifu bench loans: a day's interest accrual over active loans, in process");
    println!("machine: {}", super::machine_line());
    let mut platform = Platform::create(LedgerConfig { id_horizon_ns: Some(60 * DAY) });
    let mut now = START;
    let run = |platform: &mut Platform, now: u64, action: Action| {
        // In memory: archived records stay in the platform's outbox.
        platform.apply(&Command { now: Timestamp::from_nanos(now), idempotency: None, action }, &journal::NoArchive)
    };
    let started = Instant::now();
    let buyer = match run(&mut platform, now, create(PartyKind::User, 0))? {
        Outcome::PartyCreated { number, .. } => number,
        other => bail!("{other:?}"),
    };
    let per_merchant = args.loans / args.merchants;
    let sales = per_merchant * 10_000;
    run(
        &mut platform,
        now,
        Action::TopUp { party: buyer, amount: Fen::new(sales * args.merchants), bank: "ICBC".into() },
    )?;
    let mut merchants = Vec::new();
    for index in 0..args.merchants {
        let Outcome::PartyCreated { number, .. } = run(&mut platform, now, create(PartyKind::Merchant, index + 1))?
        else {
            bail!("merchant")
        };
        let new = NewTrade::instant(number, "history".into(), Fen::new(sales), "history".into());
        let Outcome::TradeUpdated(trade) = run(&mut platform, now, Action::CreateTrade(new))? else { bail!("trade") };
        run(
            &mut platform,
            now,
            Action::PayTrade { trade: trade.number, buyer, source: PaySource::Balance, coupon: None },
        )?;
        merchants.push(number);
    }
    let bar = super::progress_bar(per_merchant * args.merchants, "loans");
    for (index, &merchant) in merchants.iter().enumerate() {
        for k in 0..per_merchant {
            now += 1;
            let action = Action::TakeLoan {
                merchant,
                amount: Fen::new(5_000 + k % 1_000),
                term_days: 30,
                out_request_no: format!("{index}-{k}"),
            };
            if !matches!(run(&mut platform, now, action)?, Outcome::LoanUpdated(_)) {
                bail!("loan {index}-{k} refused");
            }
        }
        bar.inc(per_merchant);
    }
    bar.finish_and_clear();
    let loans = per_merchant * args.merchants;
    println!(
        "{loans} active loans over {} merchants, set up in {:.1} s (not measured)",
        args.merchants,
        started.elapsed().as_secs_f64()
    );
    let transfers_before = platform.ledger().transfer_count();
    let mut timings = Vec::new();
    for day in 1..=3 {
        let started = Instant::now();
        run(&mut platform, START + day * DAY + SECOND, Action::Tick)?;
        timings.push(started.elapsed());
    }
    platform.ledger().check_conservation().map_err(|e| anyhow::anyhow!("{e}"))?;
    let accrued = platform.ledger().transfer_count() - transfers_before;
    ensure!(accrued == 3 * loans, "every loan accrues each day: {accrued} transfers for {loans} loans");
    for (day, elapsed) in timings.iter().enumerate() {
        println!(
            "day {}: accrued interest on {loans} loans in {:.2} s ({:.0} loans/s)",
            day + 1,
            elapsed.as_secs_f64(),
            loans as f64 / elapsed.as_secs_f64()
        );
    }
    Ok(())
}

fn create(kind: PartyKind, index: u64) -> Action {
    let mut key_hash = [0u8; 32];
    key_hash[..8].copy_from_slice(&index.to_le_bytes());
    key_hash[31] = u8::from(kind == PartyKind::Merchant);
    Action::CreateParty {
        kind,
        name: format!("party {index}"),
        key_hash,
        fee_rate_bps: None,
        webhook_url: None,
        webhook_secret: String::new(),
        app_public_key: None,
    }
}
