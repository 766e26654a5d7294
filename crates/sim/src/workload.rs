//! The day's operations, in time order, deterministic from a seed.
//!
//! First the setup (merchants, buyers with their money, the platform's
//! campaign), then arrivals spread over the day along [`DayCurve`]: nine in
//! ten are payments (to merchants chosen by a Zipf law, so a few hot
//! merchants take a large share), the rest P2P transfers, top-ups, Yu'e Bao
//! subscriptions, merchants' withdrawals and red packets. Each payment brings
//! its follow-ups (shipping and confirming escrow trades, refunds, claims of
//! red packets) at least [`FOLLOW_UP_DELAY_MIN_NANOS`] later, and the
//! platform's clock ticks every simulated minute. After the last follow-up:
//! ticks every ten simulated minutes up to twelve days on (every escrow has
//! auto-confirmed by then), and the day's Yu'e Bao yield.

use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, LogNormal, Zipf};
use rand_pcg::Pcg64Mcg;

use crate::day::{DAY_NANOS, DayCurve, GMV_2013_FEN, PAYMENTS_2013};
use crate::queue::TimeQueue;

const SECOND: u64 = ledger::NANOS_PER_SECOND;
const MINUTE: u64 = 60 * SECOND;
const HOUR: u64 = 60 * MINUTE;
/// Follow-ups come at least this long after what they follow, so a driver
/// that keeps less than this much simulated time in flight always finds the
/// trade they refer to already applied.
pub const FOLLOW_UP_DELAY_MIN_NANOS: u64 = MINUTE;
/// The clock ticks this often (simulated).
pub const TICK_NANOS: u64 = MINUTE;
/// When the last escrow trades have auto-confirmed: the platform's default
/// of ten days after shipping (the last ship the next morning), and a day to
/// spare.
pub const SETTLE_AT_NANOS: u64 = 12 * 24 * HOUR;
/// After the day the clock ticks this often until [`SETTLE_AT_NANOS`], so the
/// auto-confirmations run in many modest commands rather than one of millions
/// (which would hold every transfer and event it makes in memory at once).
pub const SETTLE_TICK_NANOS: u64 = 5 * MINUTE;
pub const SCALE_MIN: f64 = 1e-6;
pub const SCALE_MAX: f64 = 1.0;
/// The yield credited for the day (6% a year, as Yu'e Bao paid in early 2014).
pub const FUND_ANNUAL_RATE_BPS: u32 = 600;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SimConfig {
    pub seed: u64,
    /// 1.0 is the full day: 188 million payments, 35 billion yuan.
    pub scale: f64,
}

/// The sizes a configuration implies.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub payments: u64,
    /// Everything else that arrives during the day.
    pub side_arrivals: u64,
    pub merchants: u32,
    pub buyers: u32,
    /// The mean payment, in fen (35.019 billion yuan / 188 million).
    pub mean_payment: u64,
    pub campaign_budget: u64,
    pub campaign_discount: u64,
    pub campaign_min_spend: u64,
    pub campaign_per_user_limit: u32,
}

impl Plan {
    pub fn of(config: &SimConfig) -> Result<Plan, String> {
        if !(SCALE_MIN..=SCALE_MAX).contains(&config.scale) {
            return Err(format!("scale must be between {SCALE_MIN} and {SCALE_MAX} (1 is the full day)"));
        }
        let payments = ((PAYMENTS_2013 as f64 * config.scale).round() as u64).max(1);
        // Sublinear, so small runs still have a crowd: 50,000 merchants and
        // 8 million buyers at full scale.
        let merchants = ((50_000.0 * config.scale.sqrt()).round() as u32).clamp(20, 50_000);
        let buyers = ((8_000_000.0 * config.scale.powf(0.75)).round() as u32).clamp(200, 8_000_000);
        let mean_payment = GMV_2013_FEN / PAYMENTS_2013;
        let campaign_discount = 500;
        // About 3% of payments could use it; the budget covers 60% of them,
        // so it runs out during the day.
        let campaign_budget = ((payments as f64 * 0.03 * 0.6) as u64).max(1) * campaign_discount;
        Ok(Plan {
            payments,
            side_arrivals: payments / 9,
            merchants,
            buyers,
            mean_payment,
            campaign_budget,
            campaign_discount,
            campaign_min_spend: 10_000,
            campaign_per_user_limit: 3,
        })
    }

    pub fn arrivals(&self) -> u64 {
        self.payments + self.side_arrivals
    }

    /// What a buyer is expected to spend during the day, in fen.
    pub fn spend_per_buyer(&self) -> u64 {
        self.payments * self.mean_payment / u64::from(self.buyers)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    Instant,
    /// A guaranteed trade: held until the buyer confirms (or it auto-confirms).
    Escrow,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RefundShare {
    /// Whatever can still be refunded.
    Full,
    /// Half of what the buyer paid (at least 1 fen).
    Half,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Payment {
    /// The simulation's serial of the trade (its `out_trade_no` is `d11-<trade>`).
    pub trade: u64,
    pub buyer: u32,
    pub merchant: u32,
    pub amount: u64,
    pub mode: Mode,
    /// Paid from the buyer's Yu'e Bao rather than the wallet.
    pub from_fund: bool,
    /// The platform's Double Eleven campaign applies (instant trades only).
    pub campaign: bool,
    /// How many follow-ups (ship, confirm, refunds) refer to this trade.
    pub follow_ups: u8,
    /// Whether a refund is among them.
    pub refund_follows: bool,
}

/// One thing that happens. Buyers and merchants are indices (0-based) in the
/// order the setup creates them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    CreateMerchant {
        merchant: u32,
    },
    CreateBuyer {
        buyer: u32,
    },
    TopUp {
        buyer: u32,
        amount: u64,
    },
    FundSubscribe {
        buyer: u32,
        amount: u64,
    },
    CreateCampaign {
        budget: u64,
        discount: u64,
        min_spend: u64,
        per_user_limit: u32,
    },
    Pay(Payment),
    Ship {
        merchant: u32,
        trade: u64,
    },
    Confirm {
        merchant: u32,
        buyer: u32,
        trade: u64,
    },
    /// The `refund`-th refund (1-based) of a trade.
    Refund {
        merchant: u32,
        trade: u64,
        refund: u32,
        share: RefundShare,
    },
    Transfer {
        from: u32,
        to: u32,
        amount: u64,
    },
    Withdraw {
        merchant: u32,
        amount: u64,
    },
    SendRedPacket {
        sender: u32,
        packet: u64,
        total: u64,
        count: u32,
    },
    ClaimRedPacket {
        packet: u64,
        claimer: u32,
    },
    /// The platform's clock reaches this time: due work runs.
    Tick,
    /// Yu'e Bao's yield for the day.
    FundYield {
        annual_rate_bps: u32,
    },
}

impl Op {
    /// Whether this op refers to something an earlier op made (a trade or a
    /// red packet).
    pub fn is_follow_up(&self) -> bool {
        matches!(self, Op::Ship { .. } | Op::Confirm { .. } | Op::Refund { .. } | Op::ClaimRedPacket { .. })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimedOp {
    /// Nanoseconds since the day began (00:00 on 11 November); the setup is at 0.
    pub at: u64,
    pub op: Op,
    /// Part of the setup before the day.
    pub setup: bool,
}

impl TimedOp {
    /// A tick of the clock after the day: the settlement (ten days on, each
    /// auto-confirms the escrow trades shipped in its interval of the day).
    pub fn is_settlement_tick(&self) -> bool {
        matches!(self.op, Op::Tick) && self.at >= DAY_NANOS
    }
}

/// A follow-up as it waits, in 16 bytes where an `Op` takes 40: at a full
/// day's midnight tens of millions wait at once. What kind it is sits in the
/// top bits of its subject (a trade's or packet's serial, far below 2^60).
/// Its words are 32 bits, so that it waits beside a 32-bit time in 20 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FollowUp {
    /// The subject's low and high halves.
    subject: [u32; 2],
    merchant: u32,
    /// The buyer who confirms, the refund's number or the claimer.
    party: u32,
}

const KIND_SHIFT: u32 = 60;
const SERIAL_MAX: u64 = (1 << KIND_SHIFT) - 1;
const SHIP: u64 = 0;
const CONFIRM: u64 = 1;
const REFUND_FULL: u64 = 2;
const REFUND_HALF: u64 = 3;
const CLAIM: u64 = 4;

impl FollowUp {
    fn new(kind: u64, serial: u64, merchant: u32, party: u32) -> FollowUp {
        assert!(serial <= SERIAL_MAX, "serial {serial} does not fit a waiting follow-up");
        let subject = kind << KIND_SHIFT | serial;
        FollowUp { subject: [subject as u32, (subject >> 32) as u32], merchant, party }
    }

    fn of(op: Op) -> Option<FollowUp> {
        Some(match op {
            Op::Ship { merchant, trade } => FollowUp::new(SHIP, trade, merchant, 0),
            Op::Confirm { merchant, buyer, trade } => FollowUp::new(CONFIRM, trade, merchant, buyer),
            Op::Refund { merchant, trade, refund, share: RefundShare::Full } => {
                FollowUp::new(REFUND_FULL, trade, merchant, refund)
            }
            Op::Refund { merchant, trade, refund, share: RefundShare::Half } => {
                FollowUp::new(REFUND_HALF, trade, merchant, refund)
            }
            Op::ClaimRedPacket { packet, claimer } => FollowUp::new(CLAIM, packet, 0, claimer),
            _ => return None,
        })
    }

    fn op(self) -> Op {
        let subject = u64::from(self.subject[1]) << 32 | u64::from(self.subject[0]);
        let (serial, merchant, party) = (subject & SERIAL_MAX, self.merchant, self.party);
        match subject >> KIND_SHIFT {
            SHIP => Op::Ship { merchant, trade: serial },
            CONFIRM => Op::Confirm { merchant, buyer: party, trade: serial },
            REFUND_FULL => Op::Refund { merchant, trade: serial, refund: party, share: RefundShare::Full },
            REFUND_HALF => Op::Refund { merchant, trade: serial, refund: party, share: RefundShare::Half },
            _ => Op::ClaimRedPacket { packet: serial, claimer: party },
        }
    }
}

const _: () = assert!(std::mem::size_of::<(u32, FollowUp)>() == 20);

enum Stage {
    Setup { next: u64 },
    Day,
    Settle,
    FundYield,
    Done,
}

/// The stream of operations; an `Iterator` in time order.
pub struct Workload {
    plan: Plan,
    curve: DayCurve,
    rng: Pcg64Mcg,
    amounts: LogNormal<f64>,
    merchants: Zipf<f64>,
    stage: Stage,
    next_arrival: u64,
    /// The time of `next_arrival`, once drawn.
    next_arrival_at: Option<u64>,
    next_tick: u64,
    follow_ups: TimeQueue<FollowUp>,
    /// Follow-ups scheduled so far.
    serial: u64,
    next_trade: u64,
    next_packet: u64,
    /// Buyers with a Yu'e Bao holding (only they pay from it).
    fund_holders: Vec<bool>,
}

impl Workload {
    pub fn new(config: &SimConfig) -> Result<Workload, String> {
        let plan = Plan::of(config)?;
        // A log-normal spread of prices with the day's mean.
        let sigma = 1.0;
        let mu = (plan.mean_payment as f64).ln() - sigma * sigma / 2.0;
        let amounts = LogNormal::new(mu, sigma).map_err(|error| error.to_string())?;
        let merchants = Zipf::new(f64::from(plan.merchants), 1.07).map_err(|error| error.to_string())?;
        Ok(Workload {
            curve: DayCurve::double_eleven_2013(),
            rng: Pcg64Mcg::seed_from_u64(config.seed),
            amounts,
            merchants,
            stage: Stage::Setup { next: 0 },
            next_arrival: 0,
            next_arrival_at: None,
            next_tick: TICK_NANOS,
            follow_ups: TimeQueue::default(),
            serial: 0,
            next_trade: 1,
            next_packet: 1,
            fund_holders: vec![false; plan.buyers as usize],
            plan,
        })
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Setup ops: the merchants, the buyers, then each buyer's top-up (and
    /// for two in five a Yu'e Bao subscription), then the campaign.
    pub fn setup_len(&self) -> u64 {
        u64::from(self.plan.merchants) + u64::from(self.plan.buyers) * 3 + 1
    }

    fn setup_op(&mut self, index: u64) -> Option<Op> {
        let merchants = u64::from(self.plan.merchants);
        let buyers = u64::from(self.plan.buyers);
        if index < merchants {
            return Some(Op::CreateMerchant { merchant: index as u32 });
        }
        if index < merchants + buyers {
            return Some(Op::CreateBuyer { buyer: (index - merchants) as u32 });
        }
        let index = index - merchants - buyers;
        if index < buyers * 2 {
            let buyer = (index / 2) as u32;
            let spend = self.plan.spend_per_buyer().max(10_000);
            return Some(match index % 2 {
                0 => Op::TopUp { buyer, amount: round_to_yuan(spend as f64 * self.rng.random_range(1.5..4.0)) },
                // Not every buyer holds Yu'e Bao; those who do move a share of the wallet in.
                _ if self.rng.random_bool(0.4) => {
                    self.fund_holders[buyer as usize] = true;
                    Op::FundSubscribe { buyer, amount: round_to_yuan(spend as f64 * self.rng.random_range(0.2..0.6)) }
                }
                _ => return None,
            });
        }
        (index == buyers * 2).then_some(Op::CreateCampaign {
            budget: self.plan.campaign_budget,
            discount: self.plan.campaign_discount,
            min_spend: self.plan.campaign_min_spend,
            per_user_limit: self.plan.campaign_per_user_limit,
        })
    }

    fn arrival_time(&mut self, index: u64) -> u64 {
        // One arrival in each equal slice of the day's sales, at a random
        // place in its slice: in order, and shaped like the day.
        let share = (index as f64 + self.rng.random::<f64>()) / self.plan.arrivals() as f64;
        ((self.curve.time_of_share(share) * SECOND as f64) as u64).min(DAY_NANOS - 1)
    }

    fn schedule(&mut self, at: u64, op: Op) {
        let Some(follow_up) = FollowUp::of(op) else {
            unreachable!("only follow-ups are scheduled, not {op:?}");
        };
        self.serial += 1;
        self.follow_ups.push(at, follow_up);
    }

    fn buyer(&mut self) -> u32 {
        self.rng.random_range(0..self.plan.buyers)
    }

    fn merchant(&mut self) -> u32 {
        // Zipf draws 1..=n.
        (self.merchants.sample(&mut self.rng) as u32).clamp(1, self.plan.merchants) - 1
    }

    fn later(&mut self, at: u64, from: u64, to: u64) -> u64 {
        at + self.rng.random_range(from..to).max(FOLLOW_UP_DELAY_MIN_NANOS)
    }

    /// The op that arrives at `at`, with its follow-ups scheduled.
    fn arrival(&mut self, index: u64, at: u64) -> Op {
        let arrivals = self.plan.arrivals();
        let sides = self.plan.side_arrivals;
        // Exactly `side_arrivals` of the arrivals are not payments, spread evenly.
        let is_side = (u128::from(index + 1) * u128::from(sides) / u128::from(arrivals))
            > (u128::from(index) * u128::from(sides) / u128::from(arrivals));
        if is_side {
            return self.side_arrival(at);
        }
        let amount = round_to_dime(self.amounts.sample(&mut self.rng).clamp(100.0, 5_000_000.0));
        let mode = if self.rng.random_bool(0.7) { Mode::Escrow } else { Mode::Instant };
        let buyer = self.buyer();
        let mut payment = Payment {
            trade: self.next_trade,
            buyer,
            merchant: self.merchant(),
            amount,
            mode,
            from_fund: self.fund_holders[buyer as usize] && self.rng.random_bool(0.35),
            campaign: mode == Mode::Instant && amount >= self.plan.campaign_min_spend && self.rng.random_bool(0.25),
            follow_ups: 0,
            refund_follows: false,
        };
        self.next_trade += 1;
        let scheduled_before = self.serial;
        let (merchant, trade) = (payment.merchant, payment.trade);
        if mode == Mode::Escrow {
            let shipped = self.later(at, MINUTE, 3 * HOUR);
            self.schedule(shipped, Op::Ship { merchant, trade });
            if self.rng.random_bool(0.3) {
                let confirmed = self.later(shipped, HOUR, 12 * HOUR);
                self.schedule(confirmed, Op::Confirm { merchant, buyer: payment.buyer, trade });
            }
        }
        if self.rng.random_bool(0.03) {
            payment.refund_follows = true;
            let refunded = self.later(at, 5 * MINUTE, 6 * HOUR);
            if self.rng.random_bool(0.4) {
                self.schedule(refunded, Op::Refund { merchant, trade, refund: 1, share: RefundShare::Full });
            } else {
                self.schedule(refunded, Op::Refund { merchant, trade, refund: 1, share: RefundShare::Half });
                if self.rng.random_bool(0.25) {
                    let again = self.later(refunded, 10 * MINUTE, 2 * HOUR);
                    self.schedule(again, Op::Refund { merchant, trade, refund: 2, share: RefundShare::Half });
                }
            }
        }
        payment.follow_ups = (self.serial - scheduled_before) as u8;
        Op::Pay(payment)
    }

    fn side_arrival(&mut self, at: u64) -> Op {
        let spend = self.plan.spend_per_buyer().max(10_000) as f64;
        match self.rng.random_range(0..100u32) {
            0..40 => {
                let from = self.buyer();
                let to = (from + 1 + self.rng.random_range(0..self.plan.buyers.max(2) - 1)) % self.plan.buyers;
                let amount = round_to_dime(self.amounts.sample(&mut self.rng).clamp(100.0, 1_000_000.0));
                Op::Transfer { from, to, amount }
            }
            40..70 => {
                let buyer = self.buyer();
                Op::TopUp { buyer, amount: round_to_yuan(spend * self.rng.random_range(0.1..0.5)) }
            }
            70..80 => {
                let buyer = self.buyer();
                self.fund_holders[buyer as usize] = true;
                Op::FundSubscribe { buyer, amount: round_to_yuan(spend * self.rng.random_range(0.05..0.3)).max(100) }
            }
            80..90 => {
                let merchant = self.merchant();
                Op::Withdraw { merchant, amount: round_to_yuan(self.rng.random_range(50_000.0..2_000_000.0)) }
            }
            _ => {
                let packet = self.next_packet;
                self.next_packet += 1;
                let count = self.rng.random_range(2..=10u32);
                let total = round_to_yuan(self.rng.random_range(1_000.0..20_000.0)).max(u64::from(count));
                for _ in 0..count {
                    let claimed = self.later(at, MINUTE, 30 * MINUTE);
                    let claimer = self.buyer();
                    self.schedule(claimed, Op::ClaimRedPacket { packet, claimer });
                }
                Op::SendRedPacket { sender: self.buyer(), packet, total, count }
            }
        }
    }
}

impl Iterator for Workload {
    type Item = TimedOp;

    fn next(&mut self) -> Option<TimedOp> {
        loop {
            match self.stage {
                Stage::Setup { next } => {
                    if next >= self.setup_len() {
                        self.stage = Stage::Day;
                        continue;
                    }
                    self.stage = Stage::Setup { next: next + 1 };
                    if let Some(op) = self.setup_op(next) {
                        return Some(TimedOp { at: 0, op, setup: true });
                    }
                }
                Stage::Day => {
                    if self.next_arrival_at.is_none() && self.next_arrival < self.plan.arrivals() {
                        self.next_arrival_at = Some(self.arrival_time(self.next_arrival));
                    }
                    let follow_up_at = self.follow_ups.peek_at();
                    let Some(first) = [self.next_arrival_at, follow_up_at].into_iter().flatten().min() else {
                        self.stage = Stage::Settle;
                        continue;
                    };
                    // Ties: the clock first, then follow-ups, then arrivals.
                    if self.next_tick <= first {
                        let at = self.next_tick;
                        self.next_tick += TICK_NANOS;
                        return Some(TimedOp { at, op: Op::Tick, setup: false });
                    }
                    if follow_up_at == Some(first)
                        && let Some((at, follow_up)) = self.follow_ups.pop()
                    {
                        return Some(TimedOp { at, op: follow_up.op(), setup: false });
                    }
                    let index = self.next_arrival;
                    self.next_arrival += 1;
                    self.next_arrival_at = None;
                    let op = self.arrival(index, first);
                    return Some(TimedOp { at: first, op, setup: false });
                }
                Stage::Settle => {
                    let at = self.next_tick;
                    if at >= SETTLE_AT_NANOS {
                        self.stage = Stage::FundYield;
                    } else {
                        self.next_tick = (at + SETTLE_TICK_NANOS).min(SETTLE_AT_NANOS);
                    }
                    return Some(TimedOp { at, op: Op::Tick, setup: false });
                }
                Stage::FundYield => {
                    self.stage = Stage::Done;
                    // With the last tick.
                    let at = self.next_tick;
                    return Some(TimedOp {
                        at,
                        op: Op::FundYield { annual_rate_bps: FUND_ANNUAL_RATE_BPS },
                        setup: false,
                    });
                }
                Stage::Done => return None,
            }
        }
    }
}

fn round_to_yuan(fen: f64) -> u64 {
    ((fen / 100.0).round() as u64).max(1) * 100
}

fn round_to_dime(fen: f64) -> u64 {
    ((fen / 10.0).round() as u64).max(1) * 10
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::{HashMap, HashSet};

    use super::*;

    fn run(seed: u64, scale: f64) -> Vec<TimedOp> {
        Workload::new(&SimConfig { seed, scale }).unwrap().collect()
    }

    #[test]
    fn the_same_seed_gives_the_same_day_and_another_seed_another() {
        let first = run(7, 0.0002);
        assert_eq!(first, run(7, 0.0002));
        assert_ne!(first, run(8, 0.0002));
    }

    #[test]
    fn the_stream_is_in_time_order_with_the_planned_payments_and_sales() {
        let workload = Workload::new(&SimConfig { seed: 11, scale: 0.0005 }).unwrap();
        let plan = workload.plan().clone();
        let ops: Vec<TimedOp> = workload.collect();
        assert!(ops.windows(2).all(|pair| pair[0].at <= pair[1].at), "time order");
        let payments: Vec<Payment> =
            ops.iter().filter_map(|timed| if let Op::Pay(p) = timed.op { Some(p) } else { None }).collect();
        assert_eq!(payments.len() as u64, plan.payments);
        let gmv: u64 = payments.iter().map(|p| p.amount).sum();
        let expected = plan.payments * plan.mean_payment;
        assert!(gmv.abs_diff(expected) < expected / 10, "GMV {gmv} vs {expected}");
        // Trade serials are unique; every follow-up refers to an earlier payment.
        let paid_at: HashMap<u64, u64> = ops
            .iter()
            .filter_map(|timed| if let Op::Pay(p) = timed.op { Some((p.trade, timed.at)) } else { None })
            .collect();
        assert_eq!(paid_at.len(), payments.len());
        for timed in &ops {
            if let Op::Ship { trade, .. } | Op::Confirm { trade, .. } | Op::Refund { trade, .. } = timed.op {
                assert!(timed.at >= paid_at[&trade] + FOLLOW_UP_DELAY_MIN_NANOS);
            }
        }
        let shipped: HashSet<u64> =
            ops.iter().filter_map(|t| if let Op::Ship { trade, .. } = t.op { Some(trade) } else { None }).collect();
        let escrow = payments.iter().filter(|p| p.mode == Mode::Escrow).count();
        assert_eq!(shipped.len(), escrow, "every escrow trade ships");
        assert!(matches!(ops.last().unwrap().op, Op::FundYield { .. }));
        // After the day, ticks at most ten minutes apart up to the settlement time.
        let day_end = ops.iter().rposition(|timed| !matches!(timed.op, Op::Tick | Op::FundYield { .. })).unwrap();
        let ticks: Vec<u64> = ops[day_end + 1..].iter().map(|timed| timed.at).collect();
        assert!(ticks.windows(2).all(|pair| pair[1] - pair[0] <= SETTLE_TICK_NANOS), "settlement ticks");
        assert_eq!(ticks.last(), Some(&SETTLE_AT_NANOS));
        assert!(ticks.len() > 1_000);
    }

    #[test]
    fn a_few_hot_merchants_take_a_large_share() {
        let ops = run(3, 0.0005);
        let mut by_merchant: HashMap<u32, u64> = HashMap::new();
        for timed in &ops {
            if let Op::Pay(p) = timed.op {
                *by_merchant.entry(p.merchant).or_default() += 1;
            }
        }
        let mut counts: Vec<u64> = by_merchant.into_values().collect();
        counts.sort_unstable_by(|a, b| b.cmp(a));
        let total: u64 = counts.iter().sum();
        let top_one_percent: u64 = counts.iter().take(counts.len().div_ceil(100)).sum();
        assert!(top_one_percent * 5 > total, "top 1% of merchants: {top_one_percent} of {total}");
    }

    #[test]
    fn the_midnight_minutes_are_the_busiest() {
        let ops = run(5, 0.001);
        let mut per_minute = vec![0u64; 24 * 60];
        for timed in &ops {
            if let Op::Pay(_) = timed.op {
                per_minute[(timed.at / MINUTE) as usize] += 1;
            }
        }
        let busiest = per_minute.iter().enumerate().max_by_key(|(_, count)| **count).unwrap().0;
        assert!(busiest < 7, "busiest minute {busiest}");
    }

    #[test]
    fn a_waiting_follow_up_is_the_op_it_was() {
        let serial = SERIAL_MAX;
        let ops = [
            Op::Ship { merchant: u32::MAX, trade: serial },
            Op::Confirm { merchant: 3, buyer: u32::MAX, trade: 1 },
            Op::Refund { merchant: 4, trade: serial, refund: 2, share: RefundShare::Full },
            Op::Refund { merchant: 5, trade: 7, refund: u32::MAX, share: RefundShare::Half },
            Op::ClaimRedPacket { packet: serial, claimer: 9 },
        ];
        for op in ops {
            assert_eq!(FollowUp::of(op).unwrap().op(), op);
        }
        assert!(FollowUp::of(Op::Tick).is_none());
    }

    #[test]
    #[should_panic(expected = "does not fit")]
    fn a_serial_too_large_to_wait_is_refused() {
        FollowUp::of(Op::Ship { merchant: 0, trade: SERIAL_MAX + 1 });
    }

    #[test]
    fn scales_outside_the_range_are_refused() {
        assert!(Workload::new(&SimConfig { seed: 1, scale: 0.0 }).is_err());
        assert!(Workload::new(&SimConfig { seed: 1, scale: 1.5 }).is_err());
        assert!(Workload::new(&SimConfig { seed: 1, scale: f64::NAN }).is_err());
    }
}
