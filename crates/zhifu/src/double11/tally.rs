//! What a run measures as it goes: the acknowledged money figures (from each
//! command's outcome) and the timing (per simulated minute and per
//! wall-clock second). Shared by the in-process and the HTTP drivers.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

const MINUTES_PER_DAY: usize = 24 * 60;
/// Latencies are recorded in microseconds up to a minute.
const LATENCY_MAX_US: u64 = 60_000_000;

/// Money acknowledged to the driver, in fen.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Acknowledged {
    pub commands: u64,
    pub payments: u64,
    pub gmv: u64,
    pub discounts: u64,
    /// Payments refused for want of money.
    pub declined: u64,
    pub refunds: u64,
    pub refunded: u64,
    pub transfers: u64,
    pub transfer_fees: u64,
    pub top_ups: u64,
    pub topped_up: u64,
    pub fund_subscriptions: u64,
    pub withdrawals: u64,
    pub withdrawn: u64,
    pub withdrawal_fees: u64,
    pub red_packets: u64,
    pub red_packet_claims: u64,
    pub fund_yield: u64,
    /// Escrow trades the clock confirmed (their buyers did not in time).
    pub auto_confirmed: u64,
    /// Refusals other than declined payments, by what and why.
    pub rejected: BTreeMap<String, u64>,
}

/// One minute of the simulated day.
pub struct Minute {
    pub payments: u64,
    pub gmv: u64,
    pub latency: Histogram<u64>,
}

/// Why the in-process driver stopped to wait for answers. While it waits
/// nothing new reaches the writer, whose next group commit is then smaller:
/// the pipeline's bubbles, but for a full queue (the writer is behind).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stall {
    /// A queue's worth in flight: the writer is the bottleneck.
    QueueFull,
    /// Everything submitted (the setup's end, each settlement tick that
    /// waits, the ticks sent without a wait before the fund's yield).
    Everything,
    /// A follow-up waiting for its payment's answer (the trade's number).
    Payment,
    /// A refund waiting for the last refund on its trade (what it refunded).
    Refund,
    /// A red packet's claim waiting for its sending's answer (its number).
    Packet,
}

impl Stall {
    pub const ALL: [Stall; 5] = [Stall::QueueFull, Stall::Everything, Stall::Payment, Stall::Refund, Stall::Packet];

    pub fn describe(self) -> &'static str {
        match self {
            Stall::QueueFull => "with the queue full",
            Stall::Everything => "for everything submitted",
            Stall::Payment => "for a follow-up's payment",
            Stall::Refund => "for a refund's trade",
            Stall::Packet => "for a claim's red packet",
        }
    }
}

/// How often, and how long, the driver waited, by why.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stalls {
    pub waits: [u64; Stall::ALL.len()],
    pub waited: [Duration; Stall::ALL.len()],
}

impl Stalls {
    pub fn record(&mut self, why: Stall, waited: Duration) {
        self.waits[why as usize] += 1;
        self.waited[why as usize] += waited;
    }

    /// How many times the driver waited for `why`, and how long in all.
    pub fn of(&self, why: Stall) -> (u64, Duration) {
        (self.waits[why as usize], self.waited[why as usize])
    }
}

pub struct Tally {
    pub acknowledged: Acknowledged,
    /// The in-process driver's waits for answers.
    pub stalls: Stalls,
    /// Submit to answer of every command of the day (not the setup), in µs.
    pub latency: Histogram<u64>,
    pub minutes: Vec<Minute>,
    /// Payments answered in each wall-clock second since the day began.
    pub wall_seconds: Vec<u64>,
    pub day_started: Option<Instant>,
    /// When the day's last payment was answered: the arrivals end there,
    /// the settlement (follow-ups, then twelve days of ticks) goes on.
    pub last_payment_answered: Option<Instant>,
    pub day_finished: Option<Instant>,
    /// Settlement ticks sent without waiting that left something due at
    /// their time: the forecast was wrong, and the run's commands are not
    /// the ones waiting would have sent (the run fails).
    pub quiet_ticks_left_due: u64,
}

#[allow(clippy::expect_used)] // constant bounds, valid for hdrhistogram: not input
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 2).expect("valid histogram bounds")
}

impl Tally {
    pub fn new() -> Tally {
        Tally {
            acknowledged: Acknowledged::default(),
            latency: histogram(),
            minutes: (0..MINUTES_PER_DAY).map(|_| Minute { payments: 0, gmv: 0, latency: histogram() }).collect(),
            wall_seconds: Vec::new(),
            day_started: None,
            last_payment_answered: None,
            day_finished: None,
            quiet_ticks_left_due: 0,
            stalls: Stalls::default(),
        }
    }

    /// Records the answer to a command submitted at `submitted` for
    /// simulated minute `minute` (`None`: outside the day).
    pub fn answered(&mut self, minute: Option<usize>, submitted: Instant, now: Instant, payment: Option<u64>) {
        let micros = u64::try_from(now.duration_since(submitted).as_micros()).unwrap_or(u64::MAX);
        let micros = micros.clamp(1, LATENCY_MAX_US);
        self.acknowledged.commands += 1;
        let Some(minute) = minute.filter(|&m| m < MINUTES_PER_DAY) else { return };
        let _ = self.latency.record(micros);
        let slot = &mut self.minutes[minute];
        let _ = slot.latency.record(micros);
        if let Some(amount) = payment {
            slot.payments += 1;
            slot.gmv += amount;
            if let Some(started) = self.day_started {
                let second = now.duration_since(started).as_secs() as usize;
                if self.wall_seconds.len() <= second {
                    self.wall_seconds.resize(second + 1, 0);
                }
                self.wall_seconds[second] += 1;
                // (The latest: the HTTP driver's answers come from several tasks.)
                self.last_payment_answered = self.last_payment_answered.max(Some(now));
            }
        }
    }

    pub fn reject(&mut self, what: &str, why: &str) {
        *self.acknowledged.rejected.entry(format!("{what}: {why}")).or_default() += 1;
    }

    /// Wall-clock time the day's operations took.
    pub fn day_elapsed(&self) -> Duration {
        self.since_day_started(self.day_finished)
    }

    /// Wall-clock time from the day's start to its last payment's answer.
    pub fn arrivals_elapsed(&self) -> Duration {
        self.since_day_started(self.last_payment_answered)
    }

    fn since_day_started(&self, end: Option<Instant>) -> Duration {
        match (self.day_started, end) {
            (Some(start), Some(end)) => end.duration_since(start),
            _ => Duration::ZERO,
        }
    }

    /// The most payments answered in one wall-clock second.
    pub fn peak_per_second(&self) -> u64 {
        self.wall_seconds.iter().copied().max().unwrap_or(0)
    }
}
