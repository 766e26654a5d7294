//! The VOPR: a deterministic simulator of the whole platform (after
//! TigerBeetle's). From a seed it drives every product — parties, top-ups,
//! transfers, withdrawals, trades of both modes with refunds, advances and
//! timeouts, the fund, loans, campaigns, coupons, red packets, fee schedules
//! the admin changes, webhooks that fail — through the real journal and platform, with clock jumps, retried
//! requests and crashes with restarts. After every step it checks the
//! platform's books against the ledger (`Platform::check_invariants`),
//! every user's wallet against a simple model of what the answers said, and
//! at every restart that recovery rebuilt the very state (its digest). The
//! same seed and steps replay exactly: a failure names both.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use journal::{Durable, Faults, Options, SimulatedDisk};
use ledger::LedgerConfig;
use platform::disputes::DisputeStep;
use platform::{
    Action, Actor, AuditNote, CampaignNumber, Command, CouponNumber, DeliveryAttempt, FeeSchedule, Fen, FreeQuota,
    IdempotencyTag, LoanNumber, NewCampaign, NewTrade, Outcome, PartyKind, PartyNumber, PaySource, Platform,
    PlatformConfig, Product, QuotaPeriod, RedPacketNumber, Target, Timestamp, TradeMode, TradeNumber, TradeStatus,
    WithdrawalStatus,
};
use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;

/// 2013-11-11T00:00:00+08:00, where the simulated clock starts.
const START_NANOS: u64 = 1_384_099_200 * SECOND;
const SECOND: u64 = ledger::NANOS_PER_SECOND;
/// Parties the simulation makes at most.
const USERS_MAX: usize = 12;
const MERCHANTS_MAX: usize = 4;
/// Commands remembered for retrying under their idempotency key.
const RETRIES_KEPT: usize = 32;
/// Where the node keeps its data, on the simulated disk.
const DIRECTORY: &str = "/vopr/node";
/// Starts in a row that a fault may spoil before the run counts it a failure.
const OPEN_ATTEMPTS_MAX: u32 = 16;
/// Crashes in a row while one command goes through, at most.
const CRASHES_PER_COMMAND_MAX: u32 = 16;

/// The seed and step running now, for a panic's report (a broken
/// invariant in the writer stops the process: `position` still names where).
static SEED_NOW: AtomicU64 = AtomicU64::new(0);
static STEP_NOW: AtomicU64 = AtomicU64::new(0);

/// The seed and step of the latest run in this process.
pub fn position() -> (u64, u64) {
    (SEED_NOW.load(Ordering::Relaxed), STEP_NOW.load(Ordering::Relaxed))
}

/// What went wrong, and where: replay it with the same seed and steps.
#[derive(Debug)]
pub struct Failure {
    pub seed: u64,
    pub step: u64,
    pub what: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "vopr seed={} step={}: {}", self.seed, self.step, self.what)
    }
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub steps: u64,
    pub commands: u64,
    /// Clean restarts, and crashes (the power cut, or a fault that stopped the writer).
    pub restarts: u64,
    pub crashes: u64,
    /// Disk faults injected (failed syncs, full writes, flipped reads).
    pub faults: u64,
    /// The final state's digest (`journal::digest`).
    pub digest: u64,
    /// Answers by kind (`TradeUpdated`, `Rejected(InsufficientFunds)`, …):
    /// what the run exercised.
    pub answers: BTreeMap<String, u64>,
}

/// An answer's kind: its variant, and a refusal's reason.
fn kind_of(outcome: &Outcome) -> String {
    let text = format!("{outcome:?}");
    let end = |text: &str| text.find(|c: char| !c.is_alphanumeric()).unwrap_or(text.len());
    match outcome {
        Outcome::Rejected(_) => {
            let reason = &text["Rejected(".len()..];
            format!("Rejected({})", &reason[..end(reason)])
        }
        _ => text[..end(&text)].to_string(),
    }
}

/// Wallets of users as the answers said they must be (available money).
#[derive(Default)]
struct Model {
    wallets: BTreeMap<PartyNumber, i128>,
    /// Withdrawals under way: (user, amount + fee), until the bank answers.
    withdrawals: BTreeMap<u64, (PartyNumber, Fen)>,
    /// Red packets not yet returned: their sender.
    packets: BTreeMap<RedPacketNumber, PartyNumber>,
    /// API keys (by hash) as the answers said: whose, read-only, until when.
    keys: BTreeMap<[u8; 32], (PartyNumber, bool, Option<Timestamp>)>,
    /// Disputes of trades paid from a wallet: the buyer, and what their
    /// refunds have given back so far (the clock may accept one).
    disputes: BTreeMap<u64, (PartyNumber, Fen)>,
    /// Freezes: the buyer, and what has been released so far (by the
    /// merchant, by a payment's `complete`, or by expiry).
    freezes: BTreeMap<u64, (PartyNumber, Fen)>,
}

impl Model {
    fn credit(&mut self, user: PartyNumber, amount: Fen) {
        if let Some(wallet) = self.wallets.get_mut(&user) {
            *wallet += i128::from(amount);
        }
    }

    fn debit(&mut self, user: PartyNumber, amount: Fen) {
        self.credit(user, Fen::ZERO);
        if let Some(wallet) = self.wallets.get_mut(&user) {
            *wallet -= i128::from(amount);
        }
    }
}

pub struct Vopr {
    seed: u64,
    rng: Pcg64Mcg,
    disk: SimulatedDisk,
    store: Option<Durable<Platform>>,
    /// Faults the disk had injected when the store last opened: a failure
    /// after more is the fault's doing, not a bug.
    faults_at_open: u64,
    now: Timestamp,
    step: u64,
    commands: u64,
    restarts: u64,
    crashes: u64,
    users: Vec<PartyNumber>,
    merchants: Vec<PartyNumber>,
    trades: Vec<TradeNumber>,
    loans: Vec<(LoanNumber, PartyNumber)>,
    campaigns: Vec<(CampaignNumber, Option<PartyNumber>)>,
    coupons: Vec<(CouponNumber, PartyNumber)>,
    /// Recent commands sent under an idempotency key, with their answers.
    sent: Vec<(Command, Outcome)>,
    model: Model,
    answers: BTreeMap<String, u64>,
}

fn options(disk: &SimulatedDisk) -> Options {
    Options {
        // Snapshots often, so that restarts recover from one and the log after it.
        snapshot_every_records: 64,
        ledger: LedgerConfig { id_horizon_ns: Some(3_600 * SECOND) },
        // Small frames: many archive writes, reads and frame boundaries.
        archive_frame_bytes: 512,
        disk: Arc::new(disk.clone()),
        // Every disk operation in one order, so that a seed replays exactly.
        background_threads: false,
        ..Options::default()
    }
}

/// How faulty a seed's disk is: a third of seeds have a perfect one.
fn faults_of(rng: &mut Pcg64Mcg) -> Faults {
    if rng.random_range(0..3) == 0 {
        return Faults::default();
    }
    Faults {
        sync_fails_bps: rng.random_range(0..20),
        write_full_bps: rng.random_range(0..20),
        read_flips_bps: rng.random_range(0..20),
    }
}

impl Vopr {
    /// A simulation of `seed`, on a simulated disk of its own.
    pub fn new(seed: u64) -> Result<Vopr, Failure> {
        let mut rng = Pcg64Mcg::seed_from_u64(seed);
        let disk = SimulatedDisk::new(seed ^ 0x5eed_d15c);
        disk.set_faults(faults_of(&mut rng));
        let mut vopr = Vopr {
            seed,
            rng,
            disk,
            store: None,
            faults_at_open: 0,
            now: Timestamp::from_nanos(START_NANOS),
            step: 0,
            commands: 0,
            restarts: 0,
            crashes: 0,
            users: Vec::new(),
            merchants: Vec::new(),
            trades: Vec::new(),
            loans: Vec::new(),
            campaigns: Vec::new(),
            coupons: Vec::new(),
            sent: Vec::new(),
            model: Model::default(),
            answers: BTreeMap::new(),
        };
        let (store, _) = vopr.open_store()?;
        vopr.store = Some(store);
        let bank_failure_bps = vopr.rng.random_range(0..3_000);
        let config = PlatformConfig { bank_failure_bps, bank_seed: seed, ..PlatformConfig::default() };
        vopr.submit(Action::Configure(config))?;
        Ok(vopr)
    }

    /// Opens the node's store as a starting process does; a fault that
    /// spoils the start (a flipped bit read, a failed sync) means another
    /// start, as an operator's supervisor would.
    fn open_store(&mut self) -> Result<(Durable<Platform>, journal::RecoveryReport), Failure> {
        let mut last_error = None;
        for _ in 0..OPEN_ATTEMPTS_MAX {
            let faults_before = self.disk.faults_injected();
            match Durable::<Platform>::open(Path::new(DIRECTORY), options(&self.disk)) {
                Ok(opened) => {
                    // A fault during the start (a flipped bit of an index it
                    // read) may show only later: it counts as after the start.
                    self.faults_at_open = faults_before;
                    return Ok(opened);
                }
                // The power may go during a start too.
                Err(error) if self.disk.faults_injected() > faults_before || self.disk.powered_off() => {
                    last_error = Some(error);
                    self.disk.crash();
                }
                Err(error) => return Err(self.fail(format!("recovery failed with no fault to blame: {error}"))),
            }
        }
        Err(self.fail(format!("{OPEN_ATTEMPTS_MAX} starts in a row failed: {last_error:?}")))
    }

    /// Whether the disk's faults explain a failure (an injected fault since
    /// the store opened, or the power cut).
    fn disk_to_blame(&self) -> bool {
        self.disk.faults_injected() > self.faults_at_open || self.disk.powered_off()
    }

    /// A failure here, with what the disk did last.
    fn fail(&self, what: impl Into<String>) -> Failure {
        let mut what = what.into();
        let events = self.disk.events();
        if !events.is_empty() {
            what.push_str(&format!(" (the disk, latest last: {})", events.join("; ")));
        }
        Failure { seed: self.seed, step: self.step, what }
    }

    fn store(&self) -> Result<&Durable<Platform>, Failure> {
        self.store.as_ref().ok_or_else(|| self.fail("no store"))
    }

    /// Submits an action under an idempotency key of its own, as a careful
    /// client does: when the node crashes before it answers, the same
    /// request goes again after the restart and gets the answer the first
    /// one got, if it got through.
    fn submit(&mut self, action: Action) -> Result<Outcome, Failure> {
        let mut request_hash = [0u8; 32];
        request_hash[..8].copy_from_slice(&self.commands.to_le_bytes());
        let idempotency =
            IdempotencyTag { caller: PartyNumber::new(0), key: format!("k-{}", self.commands), request_hash };
        self.now = self.now.plus_nanos(self.rng.random_range(1..1_000) * 1_000_000);
        let command = Command { now: self.now, idempotency: Some(idempotency), action };
        let outcome = self.submit_until_answered(&command)?;
        self.commands += 1;
        *self.answers.entry(kind_of(&outcome)).or_default() += 1;
        self.sent.push((command, outcome.clone()));
        if self.sent.len() > RETRIES_KEPT {
            self.sent.remove(0);
        }
        Ok(outcome)
    }

    fn submit_until_answered(&mut self, command: &Command) -> Result<Outcome, Failure> {
        for _ in 0..CRASHES_PER_COMMAND_MAX {
            match self.store()?.submit(command.clone()) {
                Ok(outcome) => {
                    // A snapshot the answer started ends before the disk is
                    // touched again: every disk operation in one order.
                    self.store()?.wait_until_idle();
                    return Ok(outcome);
                }
                Err(_) if self.disk_to_blame() => self.crash(true)?,
                Err(error) => return Err(self.fail(format!("the store failed with no fault to blame: {error}"))),
            }
        }
        Err(self.fail(format!("{CRASHES_PER_COMMAND_MAX} crashes in a row on one command")))
    }

    /// Runs `steps` steps, checking after each.
    pub fn run(mut self, steps: u64) -> Result<Report, Failure> {
        SEED_NOW.store(self.seed, Ordering::Relaxed);
        for _ in 0..steps {
            self.step += 1;
            STEP_NOW.store(self.step, Ordering::Relaxed);
            self.act()?;
            self.reconcile();
            self.check()?;
        }
        let digest = self.store()?.digest().map_err(|error| self.fail(error.to_string()))?;
        if let Some(store) = self.store.take() {
            store.shutdown();
        }
        Ok(Report {
            steps: self.step,
            commands: self.commands,
            restarts: self.restarts,
            crashes: self.crashes,
            faults: self.disk.faults_injected(),
            digest,
            answers: self.answers,
        })
    }

    fn pick<T: Copy>(&mut self, from: &[T]) -> Option<T> {
        (!from.is_empty()).then(|| from[self.rng.random_range(0..from.len())])
    }

    /// Mostly one of the latest few (trades and packets expire; old ones
    /// have mostly run their course), sometimes any.
    fn pick_recent<T: Copy>(&mut self, from: &[T]) -> Option<T> {
        const LATEST: usize = 6;
        if from.len() > LATEST && self.rng.random_bool(0.75) {
            return self.pick(&from[from.len() - LATEST..]);
        }
        self.pick(from)
    }

    fn amount(&mut self) -> Fen {
        Fen::new(match self.rng.random_range(0..10) {
            0 => self.rng.random_range(1..10),
            1..=7 => self.rng.random_range(100..100_000),
            _ => self.rng.random_range(100_000..10_000_000),
        })
    }

    fn act(&mut self) -> Result<(), Failure> {
        if self.users.len() < 2 || self.merchants.is_empty() {
            return self.create_party(if self.users.len() < 2 { PartyKind::User } else { PartyKind::Merchant });
        }
        match self.rng.random_range(0..100) {
            0..=2 => {
                let kind = if self.rng.random_bool(0.7) { PartyKind::User } else { PartyKind::Merchant };
                self.create_party(kind)
            }
            3..=14 => self.top_up(),
            15..=22 => self.transfer(),
            23..=26 => self.withdraw(),
            27..=38 => self.create_trade(),
            39..=50 => self.pay_trade(),
            51..=55 => self.trade_step(),
            56..=61 => self.refund(),
            62..=65 => self.fund(),
            66..=69 => self.loan(),
            70..=73 => self.marketing(),
            74..=78 => self.red_packet(),
            79..=82 => self.deliveries(),
            83..=89 => self.tick(),
            90..=93 => self.retry(),
            94 => self.restart(),
            95 => self.fees(),
            96 => self.access(),
            97 => self.split(),
            98 => self.dispute(),
            99 => self.freeze(),
            _ => self.top_up(),
        }
    }

    /// A buyer disputes a recent trade (for up to a little more than it
    /// may), or someone takes a step on a known dispute — the right party
    /// or not, the operator deciding up to a little more than was asked.
    fn dispute(&mut self) -> Result<(), Failure> {
        let known: Vec<u64> = self.model.disputes.keys().copied().collect();
        if !known.is_empty() && self.rng.random_bool(0.6) {
            let Some(number) = self.pick(&known) else { return Ok(()) };
            let Some(dispute) = self.store()?.read(|p| p.dispute(number).cloned()) else { return Ok(()) };
            let (actor, step) = match self.rng.random_range(0..5) {
                0 => (Some(dispute.merchant), DisputeStep::Accept),
                1 => (Some(dispute.merchant), DisputeStep::Reject),
                2 => (Some(dispute.buyer), DisputeStep::Escalate),
                3 => (Some(dispute.buyer), DisputeStep::Accept),
                _ => (
                    None,
                    DisputeStep::Decide { refund: Fen::new(self.rng.random_range(0..=dispute.amount.get() + 1)) },
                ),
            };
            self.submit(Action::StepDispute { dispute: number, actor, step, note: None })?;
            return Ok(());
        }
        let Some(number) = self.pick_recent(&self.trades.clone()) else { return Ok(()) };
        let Some(trade) = self.trade_now(number)? else { return Ok(()) };
        let Some(buyer) = trade.payer else { return Ok(()) };
        let amount = Fen::new(self.rng.random_range(1..trade.refundable().get().max(1) + 2));
        let action = Action::OpenDispute { trade: number, buyer, amount, reason: "not as described".to_string() };
        if let Outcome::DisputeUpdated(dispute) = self.submit(action)?
            && dispute.created_at == self.now
            && trade.payer_account == Some(platform::accounts::wallet(buyer))
        {
            self.model.disputes.insert(dispute.number, (buyer, Fen::ZERO));
        }
        Ok(())
    }

    /// A merchant freezes part of a user's balance by a payment code, or
    /// releases or takes payments from a known freeze (up to a little more
    /// than it holds).
    fn freeze(&mut self) -> Result<(), Failure> {
        let known: Vec<u64> = self.model.freezes.keys().copied().collect();
        if !known.is_empty() && self.rng.random_bool(0.6) {
            let Some(number) = self.pick(&known) else { return Ok(()) };
            let Some(freeze) = self.store()?.read(|p| p.freeze(number).cloned()) else { return Ok(()) };
            let amount = Fen::new(self.rng.random_range(1..freeze.rest.get().max(1) + 2));
            let (merchant, reference) = (freeze.merchant, format!("f-{}", self.commands));
            let action = if self.rng.random_bool(0.5) {
                Action::Unfreeze { freeze: number, merchant, out_request_no: reference, amount }
            } else {
                let trade = NewTrade::instant(merchant, reference, amount, "stay".to_string());
                Action::PayFromFreeze { freeze: number, merchant, trade, complete: self.rng.random_bool(0.3) }
            };
            if let Outcome::TradeUpdated(trade) = self.submit(action)?
                && trade.created_at == self.now
            {
                self.trades.push(trade.number);
            }
            return Ok(());
        }
        let (Some(user), Some(merchant)) = (self.pick(&self.users.clone()), self.pick(&self.merchants.clone())) else {
            return Ok(());
        };
        let code = format!("28{:016}", self.commands % 10_000_000_000_000_000);
        let expires_at = self.now.plus_nanos(60 * SECOND);
        if !matches!(
            self.submit(Action::IssuePaymentCode { user, code: code.clone(), expires_at })?,
            Outcome::PaymentCodeIssued { .. }
        ) {
            return Ok(());
        }
        let action = Action::CreateFreeze {
            merchant,
            code,
            out_order_no: format!("fo-{}", self.commands),
            out_request_no: "f".to_string(),
            amount: self.amount(),
            title: "deposit".to_string(),
        };
        if let Outcome::FreezeUpdated(freeze) = self.submit(action)?
            && freeze.created_at == self.now
        {
            self.model.debit(user, freeze.frozen);
            self.model.freezes.insert(freeze.number, (user, Fen::ZERO));
        }
        Ok(())
    }

    /// A merchant binds a receiver (now and then unbinds one) and splits a
    /// recent trade of its own to receivers, up to and past what is left.
    fn split(&mut self) -> Result<(), Failure> {
        // A recent trade that has settled, mostly (a few tries).
        let mut found = None;
        for _ in 0..8 {
            let Some(number) = self.pick_recent(&self.trades.clone()) else { return Ok(()) };
            found = self.trade_now(number)?.map(|trade| (number, trade));
            if found.as_ref().is_some_and(|(_, trade)| trade.status == TradeStatus::TradeSuccess) {
                break;
            }
        }
        let Some((number, trade)) = found else { return Ok(()) };
        let bound: Vec<PartyNumber> =
            self.store()?.read(|p| p.royalty_receivers(trade.merchant, None).take(8).collect());
        let receiver = match self.rng.random_range(0..4) {
            0 => self.pick(&self.merchants.clone()),
            1 => self.pick(&self.users.clone()),
            // Mostly a receiver it bound (or, now and then, one it did not).
            _ => self.pick(&bound).or_else(|| self.pick(&self.users.clone())),
        };
        let Some(receiver) = receiver else { return Ok(()) };
        if bound.is_empty() || self.rng.random_bool(0.2) {
            let bind = !bound.contains(&receiver) || self.rng.random_bool(0.5);
            self.submit(Action::BindRoyalty { merchant: trade.merchant, receiver, bound: bind })?;
            return Ok(());
        }
        let left = trade.amount.saturating_sub(trade.refunded).saturating_sub(trade.fee).saturating_sub(trade.split);
        let amount = Fen::new(self.rng.random_range(1..left.get().max(1) + 2));
        let action = Action::SplitTrade {
            trade: number,
            merchant: trade.merchant,
            out_request_no: format!("s-{}", self.commands),
            parts: vec![(receiver, amount)],
        };
        if let Outcome::SplitCreated { split, .. } = self.submit(action)?
            && split.created_at == self.now
        {
            self.model.credit(receiver, amount);
        }
        Ok(())
    }

    /// The admin changes a product's fee schedule: minimums and maximums
    /// that can pass small amounts (a trade of a few fen pays a fee of at
    /// most itself), free quotas by month or for life.
    fn fees(&mut self) -> Result<(), Failure> {
        let product = [Product::Transfer, Product::Withdrawal, Product::MerchantTrade][self.rng.random_range(0..3)];
        let rate_bps = self.rng.random_range(0..300);
        let minimum = Fen::new(self.rng.random_range(0..500));
        let maximum = self.rng.random_bool(0.5).then(|| Fen::new(self.rng.random_range(1..5_000)));
        let free_quota = self.rng.random_bool(0.3).then(|| {
            let period = if self.rng.random_bool(0.5) { QuotaPeriod::Month } else { QuotaPeriod::Lifetime };
            FreeQuota { amount: Fen::new(self.rng.random_range(1..1_000_000)), period }
        });
        let schedule = FeeSchedule { rate_bps, minimum, maximum, free_quota };
        self.submit(Action::SetFeeSchedule { product, schedule })?;
        Ok(())
    }

    /// Keys and endpoints change: another read-only key, a roll with an
    /// overlap, a revoke-all, an endpoint with a filter; some of them
    /// audited as an operator's. The model follows what the answers say.
    fn access(&mut self) -> Result<(), Failure> {
        let parties: Vec<PartyNumber> = self.users.iter().chain(&self.merchants).copied().collect();
        let Some(party) = self.pick(&parties) else { return Ok(()) };
        let mut fresh = [0u8; 32];
        self.rng.fill(&mut fresh);
        let held: Vec<[u8; 32]> =
            self.model.keys.iter().filter(|(_, (owner, _, _))| *owner == party).map(|(hash, _)| *hash).collect();
        let action = match self.rng.random_range(0..5) {
            0 => Action::AddKey { party, key_hash: fresh, read_only: true },
            1 => {
                let Some(old) = self.pick(&held) else { return Ok(()) };
                let old_expires_at = self.now.plus_nanos(self.rng.random_range(0..2 * 86_400) * SECOND);
                Action::RollKey { party, old_key_hash: old, new_key_hash: fresh, old_expires_at }
            }
            2 => Action::RevokeKeys { party, new_key_hash: fresh },
            3 => return self.resend_or_delete(),
            _ => {
                let Some(merchant) = self.pick(&self.merchants.clone()) else { return Ok(()) };
                let events =
                    [vec!["trade.paid".to_string()], vec!["*".to_string()], vec!["refund.succeeded".to_string()]];
                let events = events[self.rng.random_range(0..3)].clone();
                let url = "http://127.0.0.1:9/other".to_string();
                return self
                    .submit(Action::CreateEndpoint { merchant, url, events, secret: "whsec2".into() })
                    .map(|_| ());
            }
        };
        let audited = self.rng.random_bool(0.5);
        let action = if audited {
            let note = AuditNote {
                actor: Actor::AdminKey,
                action: "vopr".into(),
                target: Target::Party(party),
                request_id: "-".into(),
            };
            Action::Audited { note, action: Box::new(action) }
        } else {
            action
        };
        let outcome = self.submit(action.clone())?;
        let inner = match action {
            Action::Audited { action, .. } => *action,
            other => other,
        };
        if outcome != Outcome::KeysChanged {
            return Ok(());
        }
        match inner {
            Action::AddKey { key_hash, read_only, .. } => {
                self.model.keys.insert(key_hash, (party, read_only, None));
            }
            Action::RollKey { old_key_hash, new_key_hash, old_expires_at, .. } => {
                let Some(&(_, read_only, before)) = self.model.keys.get(&old_key_hash) else { return Ok(()) };
                self.model.keys.insert(new_key_hash, (party, read_only, None));
                let until = before.map_or(old_expires_at, |before| before.min(old_expires_at));
                self.model.keys.insert(old_key_hash, (party, read_only, Some(until)));
            }
            Action::RevokeKeys { new_key_hash, .. } => {
                // Revoked keys stay in the model, as keys that must not work.
                let now = self.now;
                for (owner, _, until) in self.model.keys.values_mut() {
                    if *owner == party {
                        *until = Some(until.map_or(now, |until| until.min(now)));
                    }
                }
                self.model.keys.insert(new_key_hash, (party, false, None));
            }
            _ => {}
        }
        Ok(())
    }

    /// A merchant's newest event is sent again, or one of its endpoints deleted.
    fn resend_or_delete(&mut self) -> Result<(), Failure> {
        let Some(merchant) = self.pick(&self.merchants.clone()) else { return Ok(()) };
        if self.rng.random_bool(0.2) {
            let endpoints: Vec<_> = self.store()?.read(|p| p.endpoints_of(merchant).map(|e| e.number).collect());
            let Some(endpoint) = self.pick(&endpoints) else { return Ok(()) };
            return self.submit(Action::DeleteEndpoint { merchant, endpoint }).map(|_| ());
        }
        let store = self.store()?;
        let Some(offset) = store.read(|p| p.last_event_at(merchant)) else { return Ok(()) };
        let event = match store.read_with_archive(|p, archive| p.event_at(archive, offset)) {
            Ok(event) => event,
            // A read the disk's fault spoiled: the node crashes, as after a failed write.
            Err(_) if self.disk_to_blame() => return self.crash(true),
            Err(error) => return Err(self.fail(format!("cannot read an event back: {error}"))),
        };
        let to_notify_url = match &event.data {
            platform::EventData::Trade(trade) | platform::EventData::Refund { trade, .. } => trade.notify_url.is_some(),
            _ => false,
        };
        let action = Action::ResendEvent {
            event: event.number,
            offset,
            merchant,
            kind: event.kind.clone(),
            trade: event.trade,
            to_notify_url,
        };
        self.submit(action).map(|_| ())
    }

    fn create_party(&mut self, kind: PartyKind) -> Result<(), Failure> {
        let full = match kind {
            PartyKind::User => self.users.len() >= USERS_MAX,
            PartyKind::Merchant => self.merchants.len() >= MERCHANTS_MAX,
        };
        if full {
            return self.top_up();
        }
        let mut key_hash = [0u8; 32];
        key_hash[..8].copy_from_slice(&self.commands.to_le_bytes());
        key_hash[8] = kind as u8 + 1;
        let webhook_url = (kind == PartyKind::Merchant).then(|| "http://127.0.0.1:9/hook".to_string());
        let fee_rate_bps = (kind == PartyKind::Merchant).then(|| self.rng.random_range(0..200));
        let action = Action::CreateParty {
            kind,
            name: format!("party {}", self.commands),
            key_hash,
            fee_rate_bps,
            webhook_url,
            webhook_secret: "whsec".to_string(),
            app_public_key: None,
        };
        if let Outcome::PartyCreated { number, .. } = self.submit(action)? {
            self.model.keys.insert(key_hash, (number, false, None));
            match kind {
                PartyKind::User => {
                    self.users.push(number);
                    self.model.wallets.insert(number, 0);
                }
                PartyKind::Merchant => self.merchants.push(number),
            }
        }
        Ok(())
    }

    fn top_up(&mut self) -> Result<(), Failure> {
        let Some(user) = self.pick(&self.users.clone()) else { return Ok(()) };
        let amount = Fen::new(self.amount().get() * 10);
        if let Outcome::ToppedUp { amount, .. } =
            self.submit(Action::TopUp { party: user, amount, bank: "ICBC".into() })?
        {
            self.model.credit(user, amount);
        }
        Ok(())
    }

    fn transfer(&mut self) -> Result<(), Failure> {
        let Some(from) = self.pick(&self.users.clone()) else { return Ok(()) };
        let everyone: Vec<PartyNumber> = self.users.iter().chain(&self.merchants).copied().collect();
        let Some(to) = self.pick(&everyone) else { return Ok(()) };
        let amount = self.amount();
        if let Outcome::Transferred { amount, fee, .. } =
            self.submit(Action::Transfer { from, to, amount, memo: None })?
        {
            self.model.debit(from, amount + fee);
            self.model.credit(to, amount);
        }
        Ok(())
    }

    fn withdraw(&mut self) -> Result<(), Failure> {
        let Some(user) = self.pick(&self.users.clone()) else { return Ok(()) };
        let amount = self.amount();
        if let Outcome::WithdrawalRequested { number, amount, fee } =
            self.submit(Action::Withdraw { party: user, amount })?
        {
            self.model.debit(user, amount + fee);
            self.model.withdrawals.insert(number, (user, amount + fee));
        }
        Ok(())
    }

    fn create_trade(&mut self) -> Result<(), Failure> {
        let Some(merchant) = self.pick(&self.merchants.clone()) else { return Ok(()) };
        let mode = if self.rng.random_bool(0.5) { TradeMode::Escrow } else { TradeMode::Instant };
        let campaign = self
            .campaigns
            .iter()
            .filter(|(_, sponsor)| sponsor.is_none_or(|sponsor| sponsor == merchant))
            .map(|(number, _)| *number)
            .next()
            .filter(|_| self.rng.random_bool(0.3));
        let new = NewTrade {
            merchant,
            out_trade_no: format!("o-{}", self.commands),
            amount: self.amount(),
            subject: "goods".to_string(),
            mode,
            buyer: None,
            auto_confirm_days: Some(self.rng.random_range(1..4)),
            expire_minutes: Some(self.rng.random_range(1..60)),
            campaign,
            notify_url: None,
            passback_params: None,
        };
        if let Outcome::TradeUpdated(trade) = self.submit(Action::CreateTrade(new))? {
            self.trades.push(trade.number);
        }
        Ok(())
    }

    /// A trade as a reader finds it; a read the disk spoiled (a flipped bit
    /// the archive's checksum caught) is read again after a restart.
    fn trade_now(&mut self, number: TradeNumber) -> Result<Option<platform::Trade>, Failure> {
        for _ in 0..CRASHES_PER_COMMAND_MAX {
            match self.store()?.read_with_archive(|p, archive| p.trade(archive, number)) {
                Ok(trade) => return Ok(trade),
                Err(_) if self.disk_to_blame() => self.crash(true)?,
                Err(error) => return Err(self.fail(format!("reading trade {number}: {error}"))),
            }
        }
        Err(self.fail(format!("{CRASHES_PER_COMMAND_MAX} crashes in a row reading trade {number}")))
    }

    fn pay_trade(&mut self) -> Result<(), Failure> {
        let Some(trade) = self.pick_recent(&self.trades.clone()) else { return Ok(()) };
        let Some(buyer) = self.pick(&self.users.clone()) else { return Ok(()) };
        let source = if self.rng.random_bool(0.2) { PaySource::Fund } else { PaySource::Balance };
        let coupon = self.coupons.iter().find(|(_, user)| *user == buyer).map(|(coupon, _)| *coupon);
        let coupon = coupon.filter(|_| self.rng.random_bool(0.5));
        if let Outcome::TradeUpdated(paid) = self.submit(Action::PayTrade { trade, buyer, source, coupon })?
            && paid.paid_at == Some(self.now)
            && source == PaySource::Balance
        {
            self.model.debit(buyer, paid.paid_by_buyer());
        }
        Ok(())
    }

    fn trade_step(&mut self) -> Result<(), Failure> {
        let Some(number) = self.pick_recent(&self.trades.clone()) else { return Ok(()) };
        let Some(trade) = self.trade_now(number)? else { return Ok(()) };
        let action = match trade.status {
            TradeStatus::WaitBuyerPay => Action::CloseTrade { trade: number, merchant: trade.merchant },
            TradeStatus::WaitSellerSend => Action::ShipTrade { trade: number, merchant: trade.merchant },
            TradeStatus::WaitBuyerConfirm => match trade.payer {
                Some(buyer) => Action::ConfirmTrade { trade: number, buyer },
                None => return Ok(()),
            },
            _ => return Ok(()),
        };
        self.submit(action)?;
        Ok(())
    }

    fn refund(&mut self) -> Result<(), Failure> {
        let Some(number) = self.pick_recent(&self.trades.clone()) else { return Ok(()) };
        let Some(trade) = self.trade_now(number)? else { return Ok(()) };
        let refundable = trade.refundable();
        let amount = if !refundable.is_zero() && self.rng.random_bool(0.5) {
            refundable
        } else {
            Fen::new(self.rng.random_range(1..refundable.get().max(2)))
        };
        let action = Action::RefundTrade {
            trade: number,
            merchant: trade.merchant,
            out_request_no: format!("r-{}", self.commands),
            amount,
            reason: None,
        };
        if let Outcome::RefundCreated { trade: refunded, refund } = self.submit(action)?
            && refund.created_at == self.now
            && let Some(payer) = refunded.payer
            && refunded.payer_account == Some(platform::accounts::wallet(payer))
        {
            self.model.credit(payer, refund.amount);
        }
        Ok(())
    }

    fn fund(&mut self) -> Result<(), Failure> {
        let Some(user) = self.pick(&self.users.clone()) else { return Ok(()) };
        let amount = self.amount().max(Fen::new(100));
        match self.rng.random_range(0..3) {
            0 => {
                if let Outcome::FundMoved { amount, .. } = self.submit(Action::FundSubscribe { party: user, amount })? {
                    self.model.debit(user, amount);
                }
            }
            1 => {
                if let Outcome::FundMoved { amount, .. } = self.submit(Action::FundRedeem { party: user, amount })? {
                    self.model.credit(user, amount);
                }
            }
            _ => {
                let date = platform::calendar::Date::of(self.now.minus_nanos(86_400 * SECOND));
                let annual_rate_bps = self.rng.random_range(0..800);
                self.submit(Action::FundYield { date, annual_rate_bps })?;
            }
        }
        Ok(())
    }

    fn loan(&mut self) -> Result<(), Failure> {
        let Some(merchant) = self.pick(&self.merchants.clone()) else { return Ok(()) };
        match self.rng.random_range(0..3) {
            0 => {
                let action = Action::TakeLoan {
                    merchant,
                    amount: self.amount(),
                    term_days: self.rng.random_range(1..30),
                    out_request_no: format!("l-{}", self.commands),
                };
                if let Outcome::LoanUpdated(loan) = self.submit(action)? {
                    self.loans.push((loan.number, merchant));
                }
            }
            1 => {
                let Some(&(loan, merchant)) = self.loans.get(self.rng.random_range(0..self.loans.len().max(1))) else {
                    return Ok(());
                };
                let amount = self.amount();
                self.submit(Action::RepayLoan { loan, merchant, amount })?;
            }
            _ => {
                let Some(trade) = self.pick_recent(&self.trades.clone()) else { return Ok(()) };
                // Mostly the trade's own merchant; sometimes another, who must be refused.
                let merchant = match self.trade_now(trade)? {
                    Some(found) if self.rng.random_bool(0.9) => found.merchant,
                    _ => merchant,
                };
                let amount = self.rng.random_bool(0.5).then(|| self.amount());
                let action =
                    Action::TakeOrderLoan { merchant, trade, amount, out_request_no: format!("a-{}", self.commands) };
                if let Outcome::LoanUpdated(loan) = self.submit(action)? {
                    self.loans.push((loan.number, merchant));
                }
            }
        }
        Ok(())
    }

    fn marketing(&mut self) -> Result<(), Failure> {
        if self.campaigns.is_empty() || self.rng.random_bool(0.3) {
            let sponsor = if self.rng.random_bool(0.5) { self.pick(&self.merchants.clone()) } else { None };
            let discount = self.rng.random_range(1..2_000);
            let new = NewCampaign {
                sponsor,
                name: format!("campaign {}", self.commands),
                budget: Fen::new(discount * self.rng.random_range(1..20)),
                discount: Fen::new(discount),
                min_spend: Fen::new(self.rng.random_range(0..5_000)),
                per_user_limit: self.rng.random_range(1..4),
                starts_at: self.now,
                ends_at: self.now.plus_nanos(self.rng.random_range(60..86_400) * SECOND),
            };
            if let Outcome::CampaignCreated(campaign) = self.submit(Action::CreateCampaign(new))? {
                self.campaigns.push((campaign.number, campaign.sponsor));
            }
            return Ok(());
        }
        let numbers: Vec<CampaignNumber> = self.campaigns.iter().map(|(number, _)| *number).collect();
        let Some(campaign) = self.pick_recent(&numbers) else { return Ok(()) };
        let issuer = self.campaigns.iter().find(|(number, _)| *number == campaign).and_then(|(_, sponsor)| *sponsor);
        let Some(user) = self.pick(&self.users.clone()) else { return Ok(()) };
        if let Outcome::CouponIssued(coupon) =
            self.submit(Action::IssueCoupon { campaign, issuer, user, expires_at: None })?
        {
            self.coupons.push((coupon.number, user));
        }
        Ok(())
    }

    fn red_packet(&mut self) -> Result<(), Failure> {
        let Some(user) = self.pick(&self.users.clone()) else { return Ok(()) };
        let packets: Vec<RedPacketNumber> = self.model.packets.keys().copied().collect();
        if packets.is_empty() || self.rng.random_bool(0.4) {
            let count = self.rng.random_range(1..8);
            let total = self.amount().max(Fen::new(u64::from(count)));
            let mode = if self.rng.random_bool(0.5) { platform::SplitMode::Random } else { platform::SplitMode::Equal };
            let action = Action::CreateRedPacket { sender: user, total, count, mode, greeting: None };
            if let Outcome::RedPacketCreated { number, total, .. } = self.submit(action)? {
                self.model.debit(user, total);
                self.model.packets.insert(number, user);
            }
            return Ok(());
        }
        let Some(packet) = self.pick_recent(&packets) else { return Ok(()) };
        if let Outcome::RedPacketClaimed { amount, .. } = self.submit(Action::ClaimRedPacket { packet, user })? {
            self.model.credit(user, amount);
        }
        Ok(())
    }

    fn deliveries(&mut self) -> Result<(), Failure> {
        let due = self.store()?.read(|p| p.deliveries_due(self.now, 4, platform::EndpointNumber::new(0), |_| 4));
        for delivery in due {
            let delivered = self.rng.random_bool(0.6);
            let attempt = DeliveryAttempt {
                event: delivery.event,
                endpoint: delivery.endpoint,
                merchant: delivery.merchant,
                status_code: Some(if delivered { 200 } else { 503 }),
                error: (!delivered).then(|| "the endpoint answered 503".to_string()),
                duration_ms: self.rng.random_range(1..10_000),
                delivered,
            };
            self.submit(Action::RecordAttempt(attempt))?;
        }
        Ok(())
    }

    /// The clock moves (seconds, hours, or days at once) and what fell due runs.
    fn tick(&mut self) -> Result<(), Failure> {
        let step = match self.rng.random_range(0..10) {
            0..=5 => self.rng.random_range(1..120) * SECOND,
            6..=8 => self.rng.random_range(1..6) * 3_600 * SECOND,
            _ => self.rng.random_range(1..12) * 86_400 * SECOND,
        };
        self.now = self.now.plus_nanos(step);
        // A tick does a bounded share of what fell due: tick until it is all done.
        while let Outcome::Ticked { more_due: true, .. } = self.submit(Action::Tick)? {}
        self.check_nothing_overdue()
    }

    /// After a tick nothing that fell due is left waiting, however late the
    /// tick came: unpaid trades past expiry are closed, escrow past its
    /// confirmation day is settled, expired red packets and ended campaigns
    /// have given back what they held.
    fn check_nothing_overdue(&mut self) -> Result<(), Failure> {
        let now = self.now;
        for number in self.trades.clone() {
            let Some(trade) = self.trade_now(number)? else { continue };
            let overdue = match trade.status {
                TradeStatus::WaitBuyerPay => trade.expire_at <= now,
                TradeStatus::WaitBuyerConfirm => trade.confirm_due_at.is_some_and(|due| due <= now),
                _ => false,
            };
            if overdue {
                return Err(self.fail(format!("trade {number} is overdue after a tick: {trade:?}")));
            }
        }
        let stuck = self.store()?.read(|p| {
            let packets = self.model.packets.keys().filter_map(|&number| p.red_packet(number)).find(|packet| {
                let left: Fen = packet.shares[packet.claims.len()..].iter().copied().sum();
                packet.expires_at <= now && !left.is_zero() && packet.returned.is_zero()
            });
            let campaigns = self.campaigns.iter().filter_map(|&(number, _)| p.campaign(number));
            let campaigns = campaigns.filter(|campaign| campaign.ends_at <= now && campaign.returned.is_none()).count();
            (packets.map(|packet| packet.number), campaigns)
        });
        let late = self.store()?.read(|p| {
            let disputes = self.model.disputes.keys().filter_map(|&number| p.dispute(number));
            let freezes = self.model.freezes.keys().filter_map(|&number| p.freeze(number));
            let disputes = disputes.filter(|d| d.due_at.is_some_and(|due| due <= now)).count();
            let freezes = freezes.filter(|f| !f.rest.is_zero() && f.expires_at <= now).count();
            disputes + freezes
        });
        if late > 0 {
            return Err(self.fail(format!("{late} disputes or freezes past their time after a tick")));
        }
        match stuck {
            (Some(packet), _) => Err(self.fail(format!("red packet {packet} expired and kept its shares"))),
            (None, campaigns) if campaigns > 0 => {
                Err(self.fail(format!("{campaigns} ended campaigns kept their budgets")))
            }
            _ => Ok(()),
        }
    }

    /// What disputes refunded and freezes released since the last look
    /// (a step, a payment, or the clock) is back in the buyer's wallet.
    fn reconcile_disputes_and_freezes(&mut self) {
        let Some(store) = self.store.as_ref() else { return };
        let (disputes, freezes) = store.read(|p| {
            let disputes: Vec<(u64, Fen, bool)> = self
                .model
                .disputes
                .keys()
                .filter_map(|&number| p.dispute(number).map(|d| (number, d.refunded, d.status.is_over())))
                .collect();
            let freezes: Vec<(u64, Fen, bool)> = self
                .model
                .freezes
                .keys()
                .filter_map(|&number| p.freeze(number).map(|f| (number, f.released, f.rest.is_zero())))
                .collect();
            (disputes, freezes)
        });
        for (number, now_back, over) in disputes {
            self.give_back(number, now_back, over, true);
        }
        for (number, now_back, over) in freezes {
            self.give_back(number, now_back, over, false);
        }
    }

    fn give_back(&mut self, number: u64, now_back: Fen, over: bool, dispute: bool) {
        let book = if dispute { &mut self.model.disputes } else { &mut self.model.freezes };
        let Some((buyer, seen)) = book.get_mut(&number) else { return };
        let (buyer, more) = (*buyer, now_back.saturating_sub(*seen));
        *seen = now_back;
        if over {
            book.remove(&number);
        }
        self.model.credit(buyer, more);
    }

    /// A client retries a request under its idempotency key: the same answer, nothing done again.
    fn retry(&mut self) -> Result<(), Failure> {
        // Keys are remembered for 24 h (`IDEMPOTENCY_RETENTION_NANOS`); later a retry is a new request.
        let horizon = self.now.minus_nanos(platform::IDEMPOTENCY_RETENTION_NANOS);
        self.sent.retain(|(command, _)| command.now > horizon);
        if self.sent.is_empty() {
            return self.tick();
        }
        let (command, first) = self.sent[self.rng.random_range(0..self.sent.len())].clone();
        let again = self.submit_until_answered(&Command { now: self.now.plus_nanos(1), ..command })?;
        self.commands += 1;
        if again != first {
            return Err(self.fail(format!("a retry under its idempotency key answered {again:?}, first {first:?}")));
        }
        Ok(())
    }

    /// The process stops and starts again: cleanly (every answer given was
    /// durable), or by a crash — the power goes within the next few writes,
    /// whatever they are.
    fn restart(&mut self) -> Result<(), Failure> {
        if self.rng.random_bool(0.5) {
            return self.crash(false);
        }
        let changes = self.rng.random_range(0..40);
        self.disk.cut_power_after(changes);
        Ok(())
    }

    /// Stops the node and starts it again (`crashed`: the disk then keeps
    /// what a crash may keep of what was not synced). Recovery must rebuild
    /// the very state the node had — or that state and the one command it
    /// was writing when it stopped, which the log may or may not have kept.
    fn crash(&mut self, crashed: bool) -> Result<(), Failure> {
        let store = self.store.take().ok_or_else(|| self.fail("no store"))?;
        let before = store.digest().map_err(|error| self.fail(error.to_string()))?;
        let health = store.health();
        let sequence_before = health.last_applied;
        // A writer that stopped on a fault (an archive read the disk spoiled
        // mid-command) left a state that need not be the log's: recovery
        // rebuilds the log's, and the checks after every step judge it.
        let trusted = health.failure.is_none();
        drop(store);
        if crashed {
            self.disk.crash();
            self.crashes += 1;
        } else {
            self.restarts += 1;
        }
        let (store, report) = self.open_store()?;
        let in_flight_kept = crashed && report.last_sequence == sequence_before + 1;
        if report.last_sequence != sequence_before && !in_flight_kept {
            return Err(self.fail(format!(
                "recovered up to record {}, the node had applied {sequence_before}",
                report.last_sequence
            )));
        }
        let recovered = store.digest().map_err(|error| self.fail(error.to_string()))?;
        if trusted && report.last_sequence == sequence_before && recovered != before {
            let how = if crashed { "crash" } else { "clean stop" };
            return Err(
                self.fail(format!("recovered digest {recovered:016x}, {before:016x} before the {how} ({report:?})"))
            );
        }
        self.store = Some(store);
        Ok(())
    }

    /// What the clock did to users' wallets: withdrawals the bank refused
    /// came back; expired red packets returned their rest.
    fn reconcile(&mut self) {
        let Some(store) = self.store.as_ref() else { return };
        let (settled, returned) = store.read(|p| {
            let settled: Vec<(u64, bool)> = self
                .model
                .withdrawals
                .keys()
                .filter_map(|&number| p.withdrawal(number).map(|w| (number, w.status)))
                .filter(|(_, status)| *status != WithdrawalStatus::Pending)
                .map(|(number, status)| (number, status == WithdrawalStatus::Failed))
                .collect();
            let returned: Vec<(RedPacketNumber, Fen)> = self
                .model
                .packets
                .keys()
                .filter_map(|&number| p.red_packet(number).map(|packet| (number, packet.returned)))
                .filter(|(_, returned)| !returned.is_zero())
                .collect();
            (settled, returned)
        });
        for (number, failed) in settled {
            if let Some((user, amount)) = self.model.withdrawals.remove(&number)
                && failed
            {
                self.model.credit(user, amount);
            }
        }
        self.reconcile_disputes_and_freezes();
        for (number, back) in returned {
            if let Some(sender) = self.model.packets.remove(&number) {
                self.model.credit(sender, back);
            }
        }
    }

    fn check(&self) -> Result<(), Failure> {
        let store = self.store()?;
        let broken: Vec<String> = store.read(|p| {
            p.check_invariants()
                .into_iter()
                .filter(|check| !check.ok)
                .map(|check| format!("{}: {}", check.name, check.detail))
                .collect()
        });
        if !broken.is_empty() {
            return Err(self.fail(format!("broken invariants: {}", broken.join("; "))));
        }
        if let Err(why) = store.read(|p| p.check_delivery_queues()) {
            return Err(self.fail(why));
        }
        for (hash, &(party, read_only, until)) in &self.model.keys {
            let works = until.is_none_or(|until| self.now < until);
            let found = store.read(|p| p.key_grant(hash)).filter(|grant| grant.works_at(self.now));
            let expected = works.then_some((party, read_only));
            if found.map(|grant| (grant.party, grant.read_only)) != expected {
                return Err(self.fail(format!("a key of {party} is {found:?}, the answers say {expected:?}")));
            }
        }
        for (&user, &expected) in &self.model.wallets {
            let found = store.read(|p| p.balance(user).map(|balance| balance.available as i128));
            if found != Some(expected) {
                return Err(self.fail(format!("user {user}'s wallet holds {found:?}, the answers say {expected}")));
            }
        }
        Ok(())
    }
}
