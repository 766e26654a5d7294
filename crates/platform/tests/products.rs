//! The wallet products through the state machine, as the journal drives it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::io::Write;

use journal::{Durable, Options, StateMachine};
use ledger::LedgerConfig;
use platform::Timestamp;
use platform::accounts::{BANK_CLEARING, REVENUE};
use platform::{
    Action, Command, Fen, IdempotencyTag, Outcome, PartyKind, PartyNumber, Platform, PlatformConfig, Rejection,
    TradeNumber, WithdrawalStatus,
};

const SECOND: u64 = 1_000_000_000;

fn fen(amount: u64) -> Fen {
    Fen::new(amount)
}
/// 2013-11-11T00:00:00+08:00.
const START: u64 = 1_384_099_200 * SECOND;

struct World {
    platform: Platform,
    now: u64,
}

impl World {
    fn new() -> World {
        World { platform: Platform::create(LedgerConfig::default()), now: START }
    }

    fn run(&mut self, action: Action) -> Outcome {
        self.now += SECOND;
        self.apply(Command { now: Timestamp::from_nanos(self.now), idempotency: None, action })
    }

    /// Without a journal the archived records stay in the platform's outbox.
    /// After every command, the books agree with the ledger.
    fn apply(&mut self, command: Command) -> Outcome {
        let outcome = self.platform.apply(&command, &journal::NoArchive).unwrap();
        self.check();
        outcome
    }

    fn party(&mut self, kind: PartyKind, key: u8) -> PartyNumber {
        let outcome = self.run(Action::CreateParty {
            kind,
            name: format!("party {key}"),
            key_hash: [key; 32],
            fee_rate_bps: None,
            webhook_url: None,
            webhook_secret: String::new(),
            app_public_key: None,
        });
        match outcome {
            Outcome::PartyCreated { number, .. } => number,
            other => panic!("{other:?}"),
        }
    }

    fn available(&self, party: PartyNumber) -> u64 {
        u64::try_from(self.platform.balance(party).unwrap().available).unwrap()
    }

    fn revenue(&self) -> u128 {
        let revenue = self.platform.ledger().account(REVENUE).unwrap();
        revenue.credits_posted - revenue.debits_posted
    }

    /// The ledger balances and every product's books agree with it.
    fn check(&self) {
        self.platform.ledger().check_conservation().unwrap();
        let broken: Vec<_> = self.platform.check_invariants().into_iter().filter(|check| !check.ok).collect();
        assert!(broken.is_empty(), "{broken:?}");
    }
}

/// A merchant and a buyer holding 1,000 yuan.
fn shop_and_buyer(submit: &mut impl FnMut(Action) -> Outcome) -> (PartyNumber, PartyNumber) {
    let Outcome::PartyCreated { number: shop, .. } = submit(party_action(PartyKind::Merchant, 1)) else { panic!() };
    let Outcome::PartyCreated { number: buyer, .. } = submit(party_action(PartyKind::User, 2)) else { panic!() };
    submit(Action::TopUp { party: buyer, amount: fen(100_000), bank: "ICBC".into() });
    (shop, buyer)
}

/// Submits actions a second apart, as a server would, and waits for each.
fn submitter(store: &Durable<Platform>) -> impl FnMut(Action) -> Outcome + '_ {
    let mut now = START;
    move |action| {
        now += SECOND;
        store.submit(Command { now: Timestamp::from_nanos(now), idempotency: None, action }).unwrap()
    }
}

fn party_action(kind: PartyKind, byte: u8) -> Action {
    Action::CreateParty {
        kind,
        name: "x".into(),
        key_hash: [byte; 32],
        fee_rate_bps: None,
        webhook_url: None,
        webhook_secret: "s".into(),
        app_public_key: None,
    }
}

fn new_trade(merchant: PartyNumber, out_trade_no: &str, amount: u64, mode: platform::TradeMode) -> platform::NewTrade {
    platform::NewTrade {
        merchant,
        out_trade_no: out_trade_no.to_string(),
        amount: fen(amount),
        subject: "tea".to_string(),
        mode,
        buyer: None,
        auto_confirm_days: None,
        expire_minutes: None,
        campaign: None,
        notify_url: None,
        passback_params: None,
    }
}

#[test]
fn a_transfer_pays_its_fee_to_revenue_in_the_same_chain() {
    let mut world = World::new();
    let alice = world.party(PartyKind::User, 1);
    let bob = world.party(PartyKind::User, 2);
    assert_eq!(
        world.run(Action::TopUp { party: alice, amount: fen(300_000), bank: "ICBC".into() }),
        Outcome::ToppedUp { number: 3, amount: fen(300_000) }
    );
    let outcome = world.run(Action::Transfer { from: alice, to: bob, amount: fen(200_000), memo: None });
    assert_eq!(outcome, Outcome::Transferred { number: 4, amount: fen(200_000), fee: fen(200) });
    assert_eq!((world.available(alice), world.available(bob), world.revenue()), (99_800, 200_000, 200));
    // Too much: nothing moves, not even the fee.
    let refused = world.run(Action::Transfer { from: alice, to: bob, amount: fen(99_790), memo: None });
    assert_eq!(refused, Outcome::Rejected(Rejection::InsufficientFunds));
    assert_eq!((world.available(alice), world.revenue()), (99_800, 200));
    assert!(matches!(
        world.run(Action::Transfer { from: alice, to: alice, amount: fen(1), memo: None }),
        Outcome::Rejected(Rejection::Conflict(_))
    ));
    assert!(matches!(
        world.run(Action::Transfer { from: alice, to: PartyNumber::new(999), amount: fen(1), memo: None }),
        Outcome::Rejected(Rejection::NotFound(_))
    ));
    world.check();
}

#[test]
fn a_withdrawal_holds_money_until_the_bank_pays_or_returns_it() {
    let mut world = World::new();
    let config = PlatformConfig {
        withdrawal_settle_seconds: 3_600,
        bank_failure_bps: 0,
        bank_seed: 7,
        ..PlatformConfig::default()
    };
    world.run(Action::Configure(config));
    let alice = world.party(PartyKind::User, 1);
    world.run(Action::TopUp { party: alice, amount: fen(3_000_000), bank: "ICBC".into() });
    // 25,000 yuan: 20,000 free for life, 5,000 at 0.1% = 5 yuan.
    let outcome = world.run(Action::Withdraw { party: alice, amount: fen(2_500_000) });
    assert_eq!(outcome, Outcome::WithdrawalRequested { number: 3, amount: fen(2_500_000), fee: fen(500) });
    let balance = world.platform.balance(alice).unwrap();
    assert_eq!((balance.available, balance.held), (499_500, 2_500_500));
    world.run(Action::Tick);
    assert_eq!(world.platform.withdrawal(3).unwrap().status, WithdrawalStatus::Pending, "not due yet");
    world.now += 3_600 * SECOND;
    assert_eq!(
        world.run(Action::Tick),
        Outcome::Ticked {
            withdrawals_settled: 1,
            withdrawals_failed: 0,
            trades_closed: 0,
            trades_settled: 0,
            more_due: false
        }
    );
    assert_eq!(world.platform.withdrawal(3).unwrap().status, WithdrawalStatus::Succeeded);
    let balance = world.platform.balance(alice).unwrap();
    assert_eq!((balance.available, balance.held, world.revenue()), (499_500, 0, 500));
    let bank = world.platform.ledger().account(BANK_CLEARING).unwrap();
    assert_eq!((bank.debits_posted, bank.credits_posted), (3_000_000, 2_500_000));

    // A bank that refuses everything: money and fee come back.
    world.run(Action::Configure(PlatformConfig { bank_failure_bps: 10_000, ..PlatformConfig::default() }));
    world.run(Action::Withdraw { party: alice, amount: fen(100_000) });
    world.now += 3_600 * SECOND;
    assert_eq!(
        world.run(Action::Tick),
        Outcome::Ticked {
            withdrawals_settled: 0,
            withdrawals_failed: 1,
            trades_closed: 0,
            trades_settled: 0,
            more_due: false
        }
    );
    assert_eq!((world.available(alice), world.revenue()), (499_500, 500));
    // The bank's statement (archive records; here still in the platform's
    // outbox): the top-up, the paid withdrawal, the returned one.
    let day = platform::calendar::Date::of_nanos(world.now);
    let lines = world.platform.bank_statement(&journal::NoArchive, day).unwrap();
    let summary: Vec<_> = lines.iter().map(|line| (line.kind, line.amount, line.succeeded)).collect();
    use platform::BankEntryKind::{TopUp, Withdrawal};
    assert_eq!(
        summary,
        [(TopUp, fen(3_000_000), true), (Withdrawal, fen(2_500_000), true), (Withdrawal, fen(100_000), false)]
    );
    world.check();
}

#[test]
fn an_idempotency_key_replays_the_first_outcome_and_refuses_another_request() {
    let mut world = World::new();
    let alice = world.party(PartyKind::User, 1);
    let tag = |hash: u8| Some(IdempotencyTag { caller: alice, key: "k1".into(), request_hash: [hash; 32] });
    let top_up = Action::TopUp { party: alice, amount: fen(500), bank: "ICBC".into() };
    let first = world.apply(Command {
        now: Timestamp::from_nanos(START + 10 * SECOND),
        idempotency: tag(1),
        action: top_up.clone(),
    });
    let again = world.apply(Command {
        now: Timestamp::from_nanos(START + 20 * SECOND),
        idempotency: tag(1),
        action: top_up.clone(),
    });
    assert_eq!(first, again);
    assert_eq!(world.available(alice), 500, "moved once");
    let other = world.apply(Command {
        now: Timestamp::from_nanos(START + 30 * SECOND),
        idempotency: tag(2),
        action: top_up.clone(),
    });
    assert_eq!(other, Outcome::IdempotencyMismatch);
    // After 24 hours the key is forgotten.
    world.now = START + 25 * 3_600 * SECOND;
    world.run(Action::Tick);
    let later =
        world.apply(Command { now: Timestamp::from_nanos(world.now + SECOND), idempotency: tag(2), action: top_up });
    assert!(matches!(later, Outcome::ToppedUp { .. }));
    assert_eq!(world.available(alice), 1_000);
}

/// A snapshot's platform state names its format: one of another version is
/// refused as such, not read as something else.
#[test]
fn a_state_of_another_format_is_refused_by_name() {
    let mut world = World::new();
    let buyer = world.party(PartyKind::User, 1);
    world.run(Action::TopUp { party: buyer, amount: fen(10_000), bank: "ICBC".into() });
    let mut state = Vec::new();
    for part in 0..Platform::STATE_PARTS {
        world.platform.encode_state(part, &mut state).unwrap();
    }
    let restored = Platform::restore(ledger::Ledger::default(), &mut state.as_slice()).unwrap();
    assert_eq!(restored.party(buyer), world.platform.party(buyer));
    // The format is the first byte (a small varint): another number is refused.
    state[0] += 1;
    let refused = Platform::restore(ledger::Ledger::default(), &mut state.as_slice()).err().unwrap();
    assert!(refused.what.contains("another format"), "{refused:?}");
}

#[test]
fn the_platform_survives_a_restart_through_its_journal() {
    let directory = tempfile::tempdir().unwrap();
    let options = Options { snapshot_every_records: 3, ..Options::default() };
    let (store, _) = Durable::<Platform>::open(directory.path(), options.clone()).unwrap();
    let mut submit = submitter(&store);
    let key = |byte: u8| Action::CreateParty {
        kind: PartyKind::User,
        name: "x".into(),
        key_hash: [byte; 32],
        fee_rate_bps: None,
        webhook_url: None,
        webhook_secret: "s".into(),
        app_public_key: None,
    };
    submit(key(1));
    submit(key(2));
    submit(Action::TopUp { party: PartyNumber::new(1), amount: fen(10_000), bank: "ICBC".into() });
    submit(Action::Transfer { from: PartyNumber::new(1), to: PartyNumber::new(2), amount: fen(5_000), memo: None });
    submit(Action::Withdraw { party: PartyNumber::new(2), amount: fen(1_000) });
    let digest = store.digest().unwrap();
    drop(submit);
    store.shutdown();
    let (store, report) = Durable::<Platform>::open(directory.path(), options).unwrap();
    assert!(report.snapshot_sequence.is_some());
    assert_eq!(store.digest().unwrap(), digest);
    assert_eq!(store.read(|p| p.party_by_key_hash(&[2; 32]).map(|p| p.number)), Some(PartyNumber::new(2)));
    assert_eq!(store.read(|p| p.withdrawal(5).map(|w| w.status)), Some(WithdrawalStatus::Pending));
}

#[test]
fn create_and_pay_pays_once_and_a_refused_payment_closes_the_trade() {
    use platform::{NewTrade, PaySource, TradeStatus};
    let mut world = World::new();
    let shop = world.party(PartyKind::Merchant, 1);
    let buyer = world.party(PartyKind::User, 2);
    world.run(Action::TopUp { party: buyer, amount: fen(10_000), bank: "ICBC".into() });
    let new =
        |out_trade_no: &str, amount: u64| NewTrade::instant(shop, out_trade_no.to_string(), fen(amount), "tea".into());
    let pay = |trade: NewTrade| Action::CreateAndPayTrade { trade, buyer, source: PaySource::Balance, coupon: None };
    let Outcome::TradeUpdated(paid) = world.run(pay(new("o-1", 6_000))) else { panic!("not paid") };
    assert_eq!((paid.status, paid.payer, paid.fee), (TradeStatus::TradeSuccess, Some(buyer), fen(36)));
    // A retry is the same trade, paid once.
    let Outcome::TradeUpdated(again) = world.run(pay(new("o-1", 6_000))) else { panic!("no replay") };
    assert_eq!(again.number, paid.number);
    assert_eq!((world.available(buyer), world.available(shop)), (4_000, 5_964));
    // Too much: refused, nothing moved, and the trade is closed.
    assert_eq!(world.run(pay(new("o-2", 6_000))), Outcome::Rejected(Rejection::InsufficientFunds));
    let closed = world.platform.trade_by_out_trade_no(&journal::NoArchive, shop, "o-2").unwrap().unwrap();
    assert_eq!((closed.status, closed.paid_at), (TradeStatus::TradeClosed, None));
    assert_eq!((world.available(buyer), world.available(shop), world.revenue()), (4_000, 5_964, 36));
    // An order the merchant opened before is not closed by a refused payment.
    assert!(matches!(world.run(Action::CreateTrade(new("o-3", 6_000))), Outcome::TradeUpdated(_)));
    assert_eq!(world.run(pay(new("o-3", 6_000))), Outcome::Rejected(Rejection::InsufficientFunds));
    let open = world.platform.trade_by_out_trade_no(&journal::NoArchive, shop, "o-3").unwrap().unwrap();
    assert_eq!(open.status, TradeStatus::WaitBuyerPay);
    world.check();
}

/// Ticks after a long gap do what fell due long ago: more transfers than
/// a memory chunk holds, older than the memory horizon, and every one of
/// them must still reach the history file and read back.
#[test]
fn a_tick_spanning_more_than_the_horizon_keeps_every_transfer_in_the_history() {
    use platform::{NewTrade, PaySource, TradeMode, TradeStatus};
    let directory = tempfile::tempdir().unwrap();
    let options = Options { ledger: LedgerConfig { id_horizon_ns: Some(3_600 * SECOND) }, ..Options::default() };
    let (store, _) = Durable::<Platform>::open(directory.path(), options.clone()).unwrap();
    let (sender, answers) = std::sync::mpsc::channel();
    let submit = |now: u64, action: Action| {
        let sender = sender.clone();
        loop {
            let sender = sender.clone();
            let command = Command { now: Timestamp::from_nanos(now), idempotency: None, action: action.clone() };
            match store.submit_with(command, move |outcome| sender.send(outcome.unwrap()).unwrap()) {
                Ok(()) => return,
                Err(journal::JournalError::Busy) => std::thread::sleep(std::time::Duration::from_millis(1)),
                Err(other) => panic!("{other}"),
            }
        }
    };
    let party = |kind, byte: u8| Action::CreateParty {
        kind,
        name: "x".into(),
        key_hash: [byte; 32],
        fee_rate_bps: None,
        webhook_url: None,
        webhook_secret: String::new(),
        app_public_key: None,
    };
    assert!(matches!(
        store.submit(Command { now: Timestamp::from_nanos(START), idempotency: None, action: party(PartyKind::Merchant, 1) }).unwrap(),
        Outcome::PartyCreated { number, .. } if number == PartyNumber::new(1)
    ));
    store
        .submit(Command { now: Timestamp::from_nanos(START), idempotency: None, action: party(PartyKind::User, 2) })
        .unwrap();
    store
        .submit(Command {
            now: Timestamp::from_nanos(START),
            idempotency: None,
            action: Action::TopUp { party: PartyNumber::new(2), amount: fen(1 << 40), bank: "ICBC".into() },
        })
        .unwrap();
    // 10,000 escrow trades (20,000 settlement transfers: more than a memory
    // chunk), shipped over three hours.
    let trades = 10_000u64;
    for index in 0..trades {
        let now = START + SECOND + index * (3 * 3_600 * SECOND / trades);
        let trade = NewTrade {
            merchant: PartyNumber::new(1),
            out_trade_no: format!("t{index}"),
            amount: fen(10_000),
            subject: "s".into(),
            mode: TradeMode::Escrow,
            buyer: None,
            auto_confirm_days: None,
            expire_minutes: None,
            campaign: None,
            notify_url: None,
            passback_params: None,
        };
        submit(
            now,
            Action::CreateAndPayTrade { trade, buyer: PartyNumber::new(2), source: PaySource::Balance, coupon: None },
        );
    }
    let numbers: Vec<TradeNumber> = (0..trades)
        .map(|_| match answers.recv().unwrap() {
            Outcome::TradeUpdated(trade) => trade.number,
            other => panic!("{other:?}"),
        })
        .collect();
    for (index, number) in numbers.iter().enumerate() {
        let now = START + 4 * 3_600 * SECOND + index as u64 * (3 * 3_600 * SECOND / trades);
        submit(now, Action::ShipTrade { trade: *number, merchant: PartyNumber::new(1) });
    }
    for _ in 0..trades {
        assert!(matches!(answers.recv().unwrap(), Outcome::TradeUpdated(_)));
    }
    assert_eq!(store.read(|p| p.trade_counts()), (0, 10_000), "shipped trades wait in the archive");
    // Ticks bring them back from the archive and auto-confirm them, a
    // bounded share each (`TICK_ITEMS_MAX`), until none is due.
    let later = START + 12 * 24 * 3_600 * SECOND;
    // What a driver may send at once: never more ticks than are needed.
    let at_least = |at: u64, limit: u32| store.read(|p| p.ticks_needed_at_least(Timestamp::from_nanos(at), limit));
    assert_eq!((at_least(START, 64), at_least(later, 64), at_least(later, 2)), (0, 3, 2));
    let mut settled = 0;
    let mut ticks = 0;
    loop {
        assert!(ticks + at_least(later, 64) <= 10_000_u32.div_ceil(platform::TICK_ITEMS_MAX), "after {ticks} ticks");
        let ticked = store
            .submit(Command { now: Timestamp::from_nanos(later), idempotency: None, action: Action::Tick })
            .unwrap();
        let Outcome::Ticked { trades_settled, more_due, .. } = ticked else { panic!("{ticked:?}") };
        settled += trades_settled;
        ticks += 1;
        if !more_due {
            break;
        }
    }
    assert_eq!((settled, ticks), (10_000, 10_000_u32.div_ceil(platform::TICK_ITEMS_MAX)));
    // The journal still takes commands, and every transfer is readable.
    store
        .submit(Command { now: Timestamp::from_nanos(later + SECOND), idempotency: None, action: Action::Tick })
        .unwrap();
    let count = store.read(|p| p.ledger().transfer_count());
    for position in [0, count / 2, count - 1] {
        assert!(store.stored_transfer(position).unwrap().is_some(), "transfer {position}");
    }
    let mut statuses = Vec::new();
    store.read_with_archive(|p, archive| p.for_each_trade(archive, |t| statuses.push(t.status))).unwrap();
    assert!(statuses.len() == 10_000 && statuses.iter().all(|&status| status == TradeStatus::TradeSuccess));
    let digest = store.digest().unwrap();
    store.shutdown();
    let (store, _) = Durable::<Platform>::open(directory.path(), options).unwrap();
    assert_eq!(store.digest().unwrap(), digest);
}

/// Events leave memory for the journal's archive: they list the same from
/// the file as from a bare platform's outbox, survive a restart (records past
/// the snapshot are cut and replayed), and a shortened archive is refused.
#[test]
fn events_are_archived_listed_newest_first_and_survive_a_restart() {
    use platform::{PaySource, TradeMode};
    let directory = tempfile::tempdir().unwrap();
    let options = Options { snapshot_every_records: 7, ..Options::default() };
    let (store, _) = Durable::<Platform>::open(directory.path(), options.clone()).unwrap();
    let mut bare = World::new();
    let mut now = START;
    let mut submit = |action: Action| {
        now += SECOND;
        let durable = store
            .submit(Command { now: Timestamp::from_nanos(now), idempotency: None, action: action.clone() })
            .unwrap();
        let bare_outcome = bare.apply(Command { now: Timestamp::from_nanos(now), idempotency: None, action });
        assert_eq!(durable, bare_outcome);
        durable
    };
    let Outcome::PartyCreated { number: shop, .. } = submit(party_action(PartyKind::Merchant, 1)) else { panic!() };
    let Outcome::PartyCreated { number: buyer, .. } = submit(party_action(PartyKind::User, 2)) else { panic!() };
    submit(Action::TopUp { party: buyer, amount: fen(1_000_000), bank: "ICBC".into() });
    for order in 0..20 {
        let trade = new_trade(shop, &format!("o-{order}"), 100 + order, TradeMode::Instant);
        submit(Action::CreateAndPayTrade { trade, buyer, source: PaySource::Balance, coupon: None });
    }
    let list = |store: &Durable<Platform>, before: Option<platform::EventNumber>, limit: usize| {
        store.read_with_archive(|p, archive| p.events_of(archive, shop, before, limit)).unwrap()
    };
    let all = list(&store, None, 100);
    assert_eq!(all.len(), 40, "paid and succeeded for each of 20 trades");
    assert!(all.windows(2).all(|pair| pair[0].number > pair[1].number), "newest first");
    assert_eq!(all.iter().filter(|e| e.kind == "trade.succeeded").count(), 20);
    assert_eq!(all, bare.platform.events_of(&journal::NoArchive, shop, None, 100).unwrap());
    let page = list(&store, Some(all[9].number), 5);
    assert_eq!(page, all[10..15].to_vec());
    assert!(list(&store, None, 100).iter().all(|e| e.party == shop));
    let digest = store.digest().unwrap();
    store.shutdown();

    // Bytes past what the snapshot refers to are cut, then the replay writes them again.
    let archive = directory.path().join("archive.log");
    let length = std::fs::metadata(&archive).unwrap().len();
    std::fs::OpenOptions::new().append(true).open(&archive).unwrap().write_all(b"torn tail").unwrap();
    let (store, report) = Durable::<Platform>::open(directory.path(), options.clone()).unwrap();
    assert!(report.snapshot_sequence.is_some() && report.records_replayed > 0);
    assert_eq!(store.digest().unwrap(), digest);
    assert_eq!(list(&store, None, 100), all);
    store.shutdown();
    assert_eq!(std::fs::metadata(&archive).unwrap().len(), length);

    // Records the snapshot relies on are gone: refuse to start, naming the file.
    std::fs::OpenOptions::new().write(true).open(&archive).unwrap().set_len(10).unwrap();
    let error = Durable::<Platform>::open(directory.path(), options).err().expect("a shortened archive is refused");
    assert!(error.to_string().contains("archive.log"), "{error}");
}

/// A settled, closed or shipped trade leaves memory for the archive; a
/// command that names it reads it back, and parks it again (where it was,
/// if the command changed nothing); it all survives a restart.
#[test]
fn trades_wait_in_the_archive_and_come_back_for_the_command_that_names_them() {
    use platform::{PaySource, TradeMode, TradeStatus};
    let directory = tempfile::tempdir().unwrap();
    let options = Options { snapshot_every_records: 5, ..Options::default() };
    let (store, _) = Durable::<Platform>::open(directory.path(), options.clone()).unwrap();
    let mut submit = submitter(&store);
    let (shop, buyer) = shop_and_buyer(&mut submit);
    let trade = |out_trade_no: &str, mode| new_trade(shop, out_trade_no, 10_000, mode);
    let pay = |trade| Action::CreateAndPayTrade { trade, buyer, source: PaySource::Balance, coupon: None };
    let Outcome::TradeUpdated(instant) = submit(pay(trade("i-1", TradeMode::Instant))) else { panic!() };
    let Outcome::TradeUpdated(escrow) = submit(pay(trade("e-1", TradeMode::Escrow))) else { panic!() };
    assert_eq!(store.read(|p| p.trade_counts()), (0, 2), "paid trades, settled or waiting to ship, left memory");
    let read = |number| store.read_with_archive(|p, archive| p.trade(archive, number)).unwrap().unwrap();
    assert_eq!(read(instant.number), *instant, "read back from the event that reported it");
    // What a group will read is known before it is applied (the writer asks
    // the disk for it while it logs the group): the record of a trade named
    // by number; nothing for an unknown one, nor for a reference (a retry
    // of an archived trade reads it when applied: see below).
    let needed = |action| {
        let command = Command { now: Timestamp::from_nanos(START), idempotency: None, action };
        let mut offsets = Vec::new();
        store.read(|p| p.archive_records_needed(&[&command], &mut offsets));
        offsets
    };
    let needed_trades = |action| {
        let offsets = needed(action);
        let trades = offsets.iter().map(|&offset| platform::read_archived_trade(store.archive(), offset).unwrap());
        trades.map(|trade| trade.number).collect::<Vec<_>>()
    };
    assert_eq!(needed_trades(Action::ShipTrade { trade: escrow.number, merchant: shop }), [escrow.number]);
    assert!(needed(pay(trade("i-1", TradeMode::Instant))).is_empty());
    assert!(
        needed(Action::ShipTrade { trade: TradeNumber::new(escrow.number.get() + 1_000), merchant: shop }).is_empty()
    );
    assert!(needed(pay(trade("i-new", TradeMode::Instant))).is_empty());

    // A refused command on it changes nothing, not even where it is (at
    // the time of the last command, so that the time kept does not move).
    let digest = store.digest().unwrap();
    let now = store.read(|p| p.last_command_at());
    let ship = Action::ShipTrade { trade: instant.number, merchant: shop };
    let ship_instant = store.submit(Command { now, idempotency: None, action: ship }).unwrap();
    assert!(matches!(ship_instant, Outcome::Rejected(Rejection::Conflict(_))), "{ship_instant:?}");
    assert_eq!(store.digest().unwrap(), digest);
    // A refund after settlement: read back, refunded, archived again.
    let refund = Action::RefundTrade {
        trade: instant.number,
        merchant: shop,
        out_request_no: "r-1".to_string(),
        amount: fen(1_000),
        reason: None,
    };
    let balances = store.read(|p| (p.balance(shop).unwrap().available, p.balance(buyer).unwrap().available));
    let read_before_refund = read(instant.number);
    let Outcome::RefundCreated { trade: refunded, .. } = submit(refund) else { panic!() };
    assert_eq!(refunded.refunded, fen(1_000));
    assert_eq!(read(instant.number), *refunded);
    assert_eq!(store.read(|p| p.trade_counts()), (0, 2));
    // The refund's share of the fee comes back to the merchant with it.
    let fee_back = u128::from(read_before_refund.fee - refunded.fee);
    assert!(fee_back > 0, "{read_before_refund:?}");
    assert_eq!(
        store.read(|p| (p.balance(shop).unwrap().available, p.balance(buyer).unwrap().available)),
        (balances.0 - 1_000 + fee_back, balances.1 + 1_000)
    );
    // A retry of the payment finds the archived trade: the same trade, paid once.
    let Outcome::TradeUpdated(again) = submit(pay(trade("i-1", TradeMode::Instant))) else { panic!() };
    assert_eq!((again.number, again.refunded), (instant.number, fen(1_000)));
    assert_eq!(store.read(|p| p.balance(buyer).unwrap().available), balances.1 + 1_000, "not paid twice");

    // The escrow waits for its buyer in the archive once shipped and settles
    // on confirmation; the list merges both.
    let Outcome::TradeUpdated(shipped) = submit(Action::ShipTrade { trade: escrow.number, merchant: shop }) else {
        panic!()
    };
    assert_eq!(shipped.status, TradeStatus::WaitBuyerConfirm);
    assert_eq!(store.read(|p| p.trade_counts()), (0, 2));
    assert_eq!(read(escrow.number), *shipped);
    let Outcome::TradeUpdated(confirmed) = submit(Action::ConfirmTrade { trade: escrow.number, buyer }) else {
        panic!()
    };
    assert_eq!(confirmed.status, TradeStatus::TradeSuccess);
    assert_eq!(store.read(|p| p.trade_counts()), (0, 2));
    let listed = store.read_with_archive(|p, archive| p.trades_newest_first(archive, None, 10, |_| true)).unwrap();
    assert_eq!(listed.iter().map(|t| t.number).collect::<Vec<_>>(), vec![escrow.number, instant.number]);
    assert_eq!(listed[0].status, TradeStatus::TradeSuccess);
    // An unpaid trade stays in memory, where the clock watches its expiry;
    // paid, it goes to the archive too.
    let Outcome::TradeUpdated(unpaid) = submit(Action::CreateTrade(trade("e-2", TradeMode::Escrow))) else { panic!() };
    assert_eq!(store.read(|p| p.trade_counts()), (1, 2));
    let paid = submit(Action::PayTrade { trade: unpaid.number, buyer, source: PaySource::Balance, coupon: None });
    assert!(matches!(&paid, Outcome::TradeUpdated(t) if t.status == TradeStatus::WaitSellerSend), "{paid:?}");
    assert_eq!(store.read(|p| p.trade_counts()), (0, 3));
    let digest = store.digest().unwrap();
    drop(submit);
    store.shutdown();

    let (store, _) = Durable::<Platform>::open(directory.path(), options).unwrap();
    assert_eq!(store.digest().unwrap(), digest);
    let again = store.read_with_archive(|p, archive| p.trade(archive, instant.number)).unwrap().unwrap();
    assert_eq!(again.refunded, fen(1_000));
}

/// The archive is part of the state: a record the writer cannot read stops
/// it (the state may no longer match the log), and a restart rebuilds the
/// archive past the last snapshot from the log and applies what it holds.
#[test]
fn an_unreadable_archive_record_stops_the_writer_and_a_restart_rebuilds_it() {
    use platform::{PaySource, TradeMode, TradeStatus};
    let directory = tempfile::tempdir().unwrap();
    // A frame a record: each is in the file soon after its command.
    let options = Options { snapshot_every_records: 1_000, archive_frame_bytes: 1, ..Options::default() };
    let (store, _) = Durable::<Platform>::open(directory.path(), options.clone()).unwrap();
    let mut submit = submitter(&store);
    let (shop, buyer) = shop_and_buyer(&mut submit);
    let trade = new_trade(shop, "e-1", 10_000, TradeMode::Escrow);
    let paid = submit(Action::CreateAndPayTrade { trade, buyer, source: PaySource::Balance, coupon: None });
    let Outcome::TradeUpdated(escrow) = paid else { panic!() };
    submit(Action::ShipTrade { trade: escrow.number, merchant: shop });
    drop(submit);

    // Damage every byte the archive holds so far (the shipped trade's record
    // among them), once the compressor has written it all.
    let archive = directory.path().join("archive.log");
    let records = store.read(|p| p.archive_len());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while archived_records(directory.path()) < records {
        assert!(std::time::Instant::now() < deadline, "the compressor wrote {records} bytes of records");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let length = std::fs::metadata(&archive).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&archive).unwrap().write_all(&vec![0xA5; length as usize]).unwrap();
    let confirm = Action::ConfirmTrade { trade: escrow.number, buyer };
    let command = |action| Command { now: Timestamp::from_nanos(START + 100 * SECOND), idempotency: None, action };
    assert!(store.submit(command(confirm.clone())).is_err(), "the record cannot be read");
    assert!(store.submit(command(Action::Tick)).is_err(), "and the writer takes nothing more");
    store.shutdown();

    // The confirmation was in the log before it failed to apply: the replay,
    // reading the rebuilt record, applies it (the answer had said "unknown").
    let (store, _) = Durable::<Platform>::open(directory.path(), options).unwrap();
    let read = store.read_with_archive(|p, archive| p.trade(archive, escrow.number)).unwrap().unwrap();
    assert_eq!(read.status, TradeStatus::TradeSuccess);
    assert_eq!(store.read(|p| p.balance(shop).unwrap().available), 10_000 - 60);
    let again = store.submit(command(confirm)).unwrap();
    assert!(matches!(again, Outcome::Rejected(Rejection::Conflict(_))), "{again:?}");
    assert!(store.read(|p| p.ledger().check_conservation().is_ok()));
}

/// Record bytes in the archive's written frames: where its last frame
/// (by `archive.idx`) ends.
fn archived_records(directory: &std::path::Path) -> u64 {
    let index = std::fs::read(directory.join("archive.idx")).unwrap_or_default();
    let Some(last) = index.len().checked_sub(16).map(|at| &index[at..at + 16]) else { return 0 };
    let records_start = u64::from_le_bytes(last[..8].try_into().unwrap());
    let file_start = u64::from_le_bytes(last[8..].try_into().unwrap());
    let log = std::fs::read(directory.join("archive.log")).unwrap_or_default();
    let Some(header) = log.get(file_start as usize..file_start as usize + 4) else { return 0 };
    records_start + u64::from(u32::from_le_bytes(header.try_into().unwrap()))
}

/// Every refund is kept in its trade (and in each event and archive record
/// of it): 50 at most, so no record grows without bound.
#[test]
fn a_trade_takes_at_most_fifty_refunds() {
    use platform::{PaySource, TradeMode};
    let mut world = World::new();
    let shop = world.party(PartyKind::Merchant, 1);
    let buyer = world.party(PartyKind::User, 2);
    world.run(Action::TopUp { party: buyer, amount: fen(10_000), bank: "ICBC".into() });
    let trade = new_trade(shop, "o-1", 1_000, TradeMode::Instant);
    let Outcome::TradeUpdated(paid) =
        world.run(Action::CreateAndPayTrade { trade, buyer, source: PaySource::Balance, coupon: None })
    else {
        panic!("not paid")
    };
    let refund = |n: usize| Action::RefundTrade {
        trade: paid.number,
        merchant: shop,
        out_request_no: format!("r-{n}"),
        amount: fen(1),
        reason: Some("x".repeat(256)),
    };
    for n in 0..50 {
        assert!(matches!(world.run(refund(n)), Outcome::RefundCreated { .. }), "refund {n}");
    }
    let before = world.available(buyer);
    assert!(matches!(world.run(refund(50)), Outcome::Rejected(Rejection::LimitExceeded(_))));
    assert_eq!(world.available(buyer), before, "nothing moved");
    // A repeat of one made is still answered as before.
    assert!(matches!(world.run(refund(7)), Outcome::RefundCreated { .. }));
    world.check();
}

/// A shipped trade waits for its buyer in the archive: a tick brings back
/// and settles the due ones only, and a partial refund in between keeps the
/// trade's auto-confirmation time.
#[test]
fn shipped_trades_wait_in_the_archive_and_ticks_bring_back_the_due_ones() {
    use platform::{PaySource, TradeMode, TradeStatus};
    const DAY: u64 = 86_400 * SECOND;
    let mut world = World::new();
    let shop = world.party(PartyKind::Merchant, 1);
    let buyer = world.party(PartyKind::User, 2);
    world.run(Action::TopUp { party: buyer, amount: fen(100_000), bank: "ICBC".into() });
    let mut numbers = Vec::new();
    for (name, days) in [("three", 3), ("one", 1), ("two", 2)] {
        let mut trade = new_trade(shop, name, 10_000, TradeMode::Escrow);
        trade.auto_confirm_days = Some(days);
        let paid = world.run(Action::CreateAndPayTrade { trade, buyer, source: PaySource::Balance, coupon: None });
        let Outcome::TradeUpdated(paid) = paid else { panic!("{paid:?}") };
        assert_eq!(world.platform.trade_counts().0, 0, "paid and waiting to ship: in the archive");
        world.run(Action::ShipTrade { trade: paid.number, merchant: shop });
        numbers.push(paid.number);
    }
    assert_eq!(world.platform.trade_counts(), (0, 3));
    let refund = Action::RefundTrade {
        trade: numbers[0],
        merchant: shop,
        out_request_no: "r-1".into(),
        amount: fen(1_000),
        reason: None,
    };
    assert!(matches!(world.run(refund), Outcome::RefundCreated { .. }));
    assert_eq!(world.platform.trade_counts(), (0, 3), "partly refunded, still waiting for its buyer");
    let shop_before = world.available(shop);

    // Two are due; the third (partly refunded) waits for its own time.
    world.now += 2 * DAY + 60 * SECOND;
    assert!(matches!(world.run(Action::Tick), Outcome::Ticked { trades_settled: 2, .. }));
    assert_eq!(world.platform.trade_counts(), (0, 3));
    assert!(matches!(world.run(Action::Tick), Outcome::Ticked { trades_settled: 0, .. }), "the third is not due");
    world.now += DAY;
    assert!(matches!(world.run(Action::Tick), Outcome::Ticked { trades_settled: 1, .. }));
    let statuses: Vec<TradeStatus> = numbers
        .iter()
        .map(|&number| world.platform.trade(&journal::NoArchive, number).unwrap().unwrap().status)
        .collect();
    assert_eq!(statuses, vec![TradeStatus::TradeSuccess; 3]);
    // 29,000 settled less the 0.6% fee.
    assert_eq!(world.available(shop), shop_before + 29_000 - 174);
    assert_eq!(world.platform.next_due(), None, "nothing left to do");
    world.check();
}

/// A tick does at most `TICK_ITEMS_MAX` due items: after a clock jump of
/// days, the first tick does the earliest ones (unpaid trades past expiry,
/// then the shipped trades in the order they fell due) and says more is
/// due; the next does the rest; the books agree after each.
#[test]
fn a_tick_does_a_bounded_share_and_the_next_ones_the_rest_in_order() {
    use platform::{PaySource, TICK_ITEMS_MAX, TradeMode, TradeStatus};
    const DAY: u64 = 86_400 * SECOND;
    let (unpaid, shipped) = (TICK_ITEMS_MAX as usize / 2, TICK_ITEMS_MAX as usize);
    let mut world = World::new();
    let shop = world.party(PartyKind::Merchant, 1);
    let buyer = world.party(PartyKind::User, 2);
    world.run(Action::TopUp { party: buyer, amount: fen(100_000_000), bank: "ICBC".into() });
    for n in 0..unpaid {
        let mut trade = new_trade(shop, &format!("u-{n}"), 100, TradeMode::Instant);
        trade.expire_minutes = Some(1);
        assert!(matches!(world.run(Action::CreateTrade(trade)), Outcome::TradeUpdated(_)));
    }
    let mut numbers = Vec::new();
    for n in 0..shipped {
        let mut trade = new_trade(shop, &format!("e-{n}"), 1_000, TradeMode::Escrow);
        trade.auto_confirm_days = Some(1);
        let paid = world.run(Action::CreateAndPayTrade { trade, buyer, source: PaySource::Balance, coupon: None });
        let Outcome::TradeUpdated(paid) = paid else { panic!("{paid:?}") };
        world.run(Action::ShipTrade { trade: paid.number, merchant: shop });
        numbers.push(paid.number);
    }
    let status = |world: &World, number| world.platform.trade(&journal::NoArchive, number).unwrap().unwrap().status;

    world.now += 2 * DAY;
    let first = world.run(Action::Tick);
    let settled_first = TICK_ITEMS_MAX as usize - unpaid;
    let Outcome::Ticked { trades_closed, trades_settled, more_due: true, .. } = first else { panic!("{first:?}") };
    assert_eq!((trades_closed as usize, trades_settled as usize), (unpaid, settled_first));
    // The ones that fell due first, and only they.
    assert_eq!(status(&world, numbers[settled_first - 1]), TradeStatus::TradeSuccess);
    assert_eq!(status(&world, numbers[settled_first]), TradeStatus::WaitBuyerConfirm);
    assert!(world.platform.anything_due(Timestamp::from_nanos(world.now)));

    let second = world.run(Action::Tick);
    let Outcome::Ticked { trades_closed: 0, trades_settled, more_due: false, .. } = second else {
        panic!("{second:?}")
    };
    assert_eq!(trades_settled as usize, shipped - settled_first);
    assert!(numbers.iter().all(|&number| status(&world, number) == TradeStatus::TradeSuccess));
    assert!(!world.platform.anything_due(Timestamp::from_nanos(world.now)));
    world.check();
}

/// Escrow money waits in one account: after every step of a mix of escrow
/// payments, partial and full refunds, shipping and confirmations, that
/// account holds exactly what the open trades say they have in escrow, and
/// the buyer's and merchant's wallets add up with it.
#[test]
fn the_escrow_account_always_holds_what_open_escrow_trades_hold() {
    use platform::{PaySource, TradeMode};
    let mut world = World::new();
    let shop = world.party(PartyKind::Merchant, 1);
    let buyer = world.party(PartyKind::User, 2);
    world.run(Action::TopUp { party: buyer, amount: fen(1_000_000), bank: "ICBC".into() });
    let mut trades = Vec::new();
    let assert_escrow_matches = |world: &World, trades: &[TradeNumber]| {
        let escrow = world.platform.ledger().account(platform::accounts::ESCROW).unwrap();
        let held: u64 = trades
            .iter()
            .map(|&number| world.platform.trade(&journal::NoArchive, number).unwrap().unwrap().in_escrow().get())
            .sum();
        assert_eq!(escrow.credits_posted - escrow.debits_posted, u128::from(held));
        let wallets = world.available(buyer) + world.available(shop) + held + world.revenue() as u64;
        assert_eq!(wallets, 1_000_000, "money is neither made nor lost");
        world.check();
    };
    for (index, amount) in [30_000u64, 20_000, 7_000, 1_000].into_iter().enumerate() {
        let trade = new_trade(shop, &format!("e-{index}"), amount, TradeMode::Escrow);
        let action = Action::CreateAndPayTrade { trade, buyer, source: PaySource::Balance, coupon: None };
        let Outcome::TradeUpdated(paid) = world.run(action) else { panic!("not paid") };
        trades.push(paid.number);
        assert_escrow_matches(&world, &trades);
    }
    let refund = |trade: TradeNumber, request: &str, amount: u64| Action::RefundTrade {
        trade,
        merchant: shop,
        out_request_no: request.into(),
        amount: fen(amount),
        reason: None,
    };
    let steps = [
        refund(trades[0], "r-1", 5_000),
        Action::ShipTrade { trade: trades[0], merchant: shop },
        refund(trades[0], "r-2", 5_000),
        refund(trades[2], "r-3", 7_000),
        Action::ShipTrade { trade: trades[1], merchant: shop },
        Action::ConfirmTrade { trade: trades[0], buyer },
        refund(trades[0], "r-4", 1_000),
        Action::ConfirmTrade { trade: trades[1], buyer },
    ];
    for step in steps {
        assert!(!matches!(world.run(step), Outcome::Rejected(_)));
        assert_escrow_matches(&world, &trades);
    }
    // A refund beyond what escrow holds for the trade is refused and moves nothing.
    assert!(matches!(world.run(refund(trades[3], "r-5", 1_001)), Outcome::Rejected(_)));
    assert_escrow_matches(&world, &trades);
}

/// A tick that comes long after work fell due (the server was down for a
/// night), with other commands served first, still does all of it: the
/// ledger refuses transfer ids older than its memory horizon, so due work
/// runs at the tick's time, not the time it fell due. (Found by the VOPR:
/// a settlement at its due time was refused as `id_expired`.)
#[test]
fn a_late_tick_after_other_commands_still_settles_and_returns_what_fell_due() {
    use platform::{NewCampaign, SplitMode, TradeMode, TradeStatus};
    let mut world =
        World { platform: Platform::create(LedgerConfig { id_horizon_ns: Some(3_600 * SECOND) }), now: START };
    let shop = world.party(PartyKind::Merchant, 1);
    let buyer = world.party(PartyKind::User, 2);
    world.run(Action::TopUp { party: buyer, amount: fen(100_000), bank: "ICBC".into() });
    world.run(Action::TopUp { party: shop, amount: fen(10_000), bank: "ICBC".into() });
    let Outcome::TradeUpdated(trade) = world.run(Action::CreateTrade(new_trade(shop, "o-1", 5_000, TradeMode::Escrow)))
    else {
        panic!()
    };
    world.run(Action::PayTrade { trade: trade.number, buyer, source: platform::PaySource::Balance, coupon: None });
    world.run(Action::ShipTrade { trade: trade.number, merchant: shop });
    let packet =
        Action::CreateRedPacket { sender: buyer, total: fen(900), count: 3, mode: SplitMode::Equal, greeting: None };
    assert!(matches!(world.run(packet), Outcome::RedPacketCreated { .. }));
    let campaign = NewCampaign {
        sponsor: Some(shop),
        name: "autumn".into(),
        budget: fen(2_000),
        discount: fen(100),
        min_spend: fen(0),
        per_user_limit: 1,
        starts_at: Timestamp::from_nanos(world.now),
        ends_at: Timestamp::from_nanos(world.now + 3_600 * SECOND),
    };
    assert!(matches!(world.run(Action::CreateCampaign(campaign)), Outcome::CampaignCreated(_)));
    let (buyer_before, shop_before) = (world.available(buyer), world.available(shop));
    // Twelve days pass with no tick; a transfer is served before the first one.
    world.now += 12 * 86_400 * SECOND;
    let transfer = world.run(Action::Transfer { from: buyer, to: shop, amount: fen(1), memo: None });
    let Outcome::Transferred { fee, .. } = transfer else { panic!("{transfer:?}") };
    let ticked = world.run(Action::Tick);
    assert!(matches!(ticked, Outcome::Ticked { trades_settled: 1, .. }), "{ticked:?}");
    let settled = world.platform.trade(&journal::NoArchive, trade.number).unwrap().unwrap();
    assert_eq!(
        (settled.status, settled.settled_at),
        (TradeStatus::TradeSuccess, Some(Timestamp::from_nanos(world.now)))
    );
    assert_eq!(world.available(buyer), buyer_before + 900 - 1 - fee.get(), "the red packet came back whole");
    let paid = 5_000 - settled.fee.get();
    assert_eq!(
        world.available(shop),
        shop_before + paid + 1 + 2_000,
        "the trade paid, the campaign's budget came back"
    );
    world.check();
}

/// A fee schedule's minimum can be more than a small trade pays: the fee
/// is then the whole amount — at a confirmation, at the tick's
/// auto-confirmation (which stops the platform if a settlement is refused)
/// and at an instant payment — never money the trade did not bring.
#[test]
fn a_merchant_fee_is_never_more_than_the_trade() {
    use platform::{FeeSchedule, PaySource, Product, TradeMode, TradeStatus};
    let mut world = World::new();
    let shop = world.party(PartyKind::Merchant, 1);
    let buyer = world.party(PartyKind::User, 2);
    world.run(Action::TopUp { party: buyer, amount: fen(10_000), bank: "ICBC".into() });
    let past = FeeSchedule { rate_bps: 60, minimum: fen(platform::AMOUNT_MAX + 1), maximum: None, free_quota: None };
    let refused = world.run(Action::SetFeeSchedule { product: Product::MerchantTrade, schedule: past });
    assert_eq!(refused, Outcome::Rejected(Rejection::Invalid(platform::rejection::Invalid::FeeAmount)));
    let schedule = FeeSchedule { rate_bps: 60, minimum: fen(100), maximum: None, free_quota: None };
    assert_eq!(
        world.run(Action::SetFeeSchedule { product: Product::MerchantTrade, schedule }),
        Outcome::FeeScheduleSet
    );
    let pay = |world: &mut World, out_trade_no: &str, amount: u64, mode: TradeMode| {
        let trade = new_trade(shop, out_trade_no, amount, mode);
        let action = Action::CreateAndPayTrade { trade, buyer, source: PaySource::Balance, coupon: None };
        let Outcome::TradeUpdated(paid) = world.run(action) else { panic!("not paid") };
        paid
    };
    // Confirmed by the buyer: 50 fen settle, 50 of the 100-fen minimum are taken.
    let confirmed = pay(&mut world, "confirmed", 50, TradeMode::Escrow);
    world.run(Action::ShipTrade { trade: confirmed.number, merchant: shop });
    let answer = world.run(Action::ConfirmTrade { trade: confirmed.number, buyer });
    let Outcome::TradeUpdated(settled) = answer else { panic!("{answer:?}") };
    assert_eq!((settled.status, settled.fee), (TradeStatus::TradeSuccess, fen(50)));
    assert_eq!(world.available(shop), 0);
    // Left to the tick: the same, ten days on.
    let waiting = pay(&mut world, "waiting", 40, TradeMode::Escrow);
    world.run(Action::ShipTrade { trade: waiting.number, merchant: shop });
    world.now += 11 * 86_400 * SECOND;
    let ticked = world.run(Action::Tick);
    assert!(matches!(ticked, Outcome::Ticked { trades_settled: 1, .. }), "{ticked:?}");
    let settled = world.platform.trade(&journal::NoArchive, waiting.number).unwrap().unwrap();
    assert_eq!((settled.status, settled.fee), (TradeStatus::TradeSuccess, fen(40)));
    // An instant payment of 30 fen: a 30-fen fee.
    let instant = pay(&mut world, "instant", 30, TradeMode::Instant);
    assert_eq!((instant.status, instant.fee), (TradeStatus::TradeSuccess, fen(30)));
    assert_eq!(world.available(shop), 0);
    assert_eq!(world.available(buyer), 10_000 - 50 - 40 - 30);
    world.check();
}

/// The ledger counts a wallet in u128; what a sender's open red packets
/// hold is counted in fen (u64): a sender past that is refused, not a stop.
#[test]
fn red_packets_past_what_a_sender_can_hold_are_refused() {
    let mut platform = Platform::create(LedgerConfig::default());
    let mut now = START;
    let mut run = |platform: &mut Platform, action: Action| {
        now += SECOND;
        platform
            .apply(&Command { now: Timestamp::from_nanos(now), idempotency: None, action }, &journal::NoArchive)
            .unwrap()
    };
    let Outcome::PartyCreated { number: rich, .. } = run(&mut platform, party_action(PartyKind::User, 1)) else {
        panic!()
    };
    let largest = fen(platform::AMOUNT_MAX);
    let packets = u64::MAX / platform::AMOUNT_MAX + 1;
    for _ in 0..packets {
        run(&mut platform, Action::TopUp { party: rich, amount: largest, bank: "ICBC".into() });
    }
    let packet = || Action::CreateRedPacket {
        sender: rich,
        total: largest,
        count: 1,
        mode: platform::SplitMode::Equal,
        greeting: None,
    };
    for _ in 0..packets - 1 {
        assert!(matches!(run(&mut platform, packet()), Outcome::RedPacketCreated { .. }));
    }
    let refused = run(&mut platform, packet());
    assert_eq!(refused, Outcome::Rejected(Rejection::Invalid(platform::rejection::Invalid::RedPacketTotal)));
    platform.ledger().check_conservation().unwrap();
    let broken: Vec<_> = platform.check_invariants().into_iter().filter(|check| !check.ok).collect();
    assert!(broken.is_empty(), "{broken:?}");
}

/// A trade's events are found along its own chain of archive records, newest
/// first, however many events of other trades its merchant has had since —
/// and the chain survives a restart.
#[test]
fn a_trades_events_are_read_along_its_own_chain() {
    use platform::{PaySource, TradeMode};
    let directory = tempfile::tempdir().unwrap();
    let (store, _) = Durable::<Platform>::open(directory.path(), Options::default()).unwrap();
    let mut submit = submitter(&store);
    let (shop, buyer) = shop_and_buyer(&mut submit);
    let pay = |trade| Action::CreateAndPayTrade { trade, buyer, source: PaySource::Balance, coupon: None };
    let Outcome::TradeUpdated(escrow) = submit(pay(new_trade(shop, "e-1", 10_000, TradeMode::Escrow))) else {
        panic!()
    };
    // Other trades' events in between.
    for index in 0..20 {
        submit(pay(new_trade(shop, &format!("other-{index}"), 100, TradeMode::Instant)));
    }
    assert!(matches!(submit(Action::ShipTrade { trade: escrow.number, merchant: shop }), Outcome::TradeUpdated(_)));
    for index in 0..2 {
        let refund = Action::RefundTrade {
            trade: escrow.number,
            merchant: shop,
            out_request_no: format!("r-{index}"),
            amount: fen(1_000),
            reason: None,
        };
        assert!(matches!(submit(refund), Outcome::RefundCreated { .. }));
    }
    let kinds = |store: &Durable<Platform>| {
        let head = store.read(|p| p.trade_record_at(escrow.number));
        let (events, truncated) = platform::walk_trade_events(store.archive(), head, 100).unwrap();
        assert!(!truncated);
        assert!(events.iter().all(|(event, _)| event.trade == Some(escrow.number)));
        events.into_iter().map(|(event, _)| event.kind).collect::<Vec<_>>()
    };
    let expected = ["refund.succeeded", "refund.succeeded", "trade.shipped", "trade.paid"];
    assert_eq!(kinds(&store), expected);
    let head = store.read(|p| p.trade_record_at(escrow.number));
    let (_, truncated) = platform::walk_trade_events(store.archive(), head, 2).unwrap();
    assert!(truncated, "a bound below the chain's length says so");
    drop(submit);
    store.shutdown();
    let (store, _) = Durable::<Platform>::open(directory.path(), Options::default()).unwrap();
    assert_eq!(kinds(&store), expected);
    store.shutdown();
}

/// `first_due_of_anything` is the first moment `anything_due` says yes,
/// payment codes and idempotency keys included (which `next_due` leaves
/// out): a caller sends the ticks before it without waiting for each one's
/// answer, so a tick just before it must find nothing, and one at it
/// something.
#[test]
fn nothing_is_due_before_the_first_due_moment_and_something_is_at_it() {
    const DAY: u64 = 86_400 * SECOND;
    let mut world = World::new();
    let alice = world.party(PartyKind::User, 1);
    assert_eq!(world.platform.first_due_of_anything(), None);
    let made_at = START + 10 * SECOND;
    let tag = Some(IdempotencyTag { caller: alice, key: "k1".into(), request_hash: [1; 32] });
    let top_up = Action::TopUp { party: alice, amount: fen(500), bank: "ICBC".into() };
    world.apply(Command { now: Timestamp::from_nanos(made_at), idempotency: tag, action: top_up });
    // The key is forgotten once more than a day has passed since it was made.
    let key_due = made_at + DAY + 1;
    assert_eq!(world.platform.first_due_of_anything(), Some(Timestamp::from_nanos(key_due)));
    world.now = made_at;
    let code_due = made_at + 3_600 * SECOND;
    let code = Action::IssuePaymentCode {
        user: alice,
        code: "286012345678901234".into(),
        expires_at: Timestamp::from_nanos(code_due),
    };
    assert!(matches!(world.run(code), Outcome::PaymentCodeIssued { .. }));
    for due in [code_due, key_due] {
        assert_eq!(world.platform.first_due_of_anything(), Some(Timestamp::from_nanos(due)));
        assert!(!world.platform.anything_due(Timestamp::from_nanos(due - 1)));
        world.now = due - 1 - SECOND;
        let before = world.run(Action::Tick);
        assert!(matches!(before, Outcome::Ticked { more_due: false, .. }), "{before:?}");
        assert_eq!(
            world.platform.first_due_of_anything(),
            Some(Timestamp::from_nanos(due)),
            "the tick before did nothing"
        );
        assert!(world.platform.anything_due(Timestamp::from_nanos(due)));
        world.run(Action::Tick);
        assert!(world.platform.first_due_of_anything().is_none_or(|next| next.nanos() > due));
    }
    assert_eq!(world.platform.first_due_of_anything(), None);
}
