//! The console's live view: payments, their money (GMV) and how long they
//! took, per second of wall-clock time over the last five minutes, as this
//! node answered them.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;

/// Seconds kept.
pub const WINDOW_SECONDS: u64 = 300;
/// A payment slower than this is counted as this.
const LATENCY_US_MAX: u64 = 60_000_000;

struct Second {
    at: u64,
    payments: u64,
    gmv_fen: u64,
    latency_us: Histogram<u64>,
}

/// One second of the window, as the live view shows it.
pub struct SecondFigures {
    pub at: u64,
    pub payments: u64,
    pub gmv_fen: u64,
}

/// A stretch of the window taken together.
pub struct Summary {
    pub payments: u64,
    pub gmv_fen: u64,
    pub p50_us: u64,
    pub p99_us: u64,
}

#[derive(Default)]
pub struct Pulse {
    seconds: Mutex<VecDeque<Second>>,
}

fn now_seconds() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_secs())
}

impl Pulse {
    /// A payment of `amount_fen` answered after `took`.
    pub fn record(&self, amount_fen: u64, took: Duration) {
        let at = now_seconds();
        let mut seconds = self.seconds.lock().unwrap_or_else(PoisonError::into_inner);
        if seconds.back().is_none_or(|last| last.at < at) {
            let Ok(latency_us) = Histogram::new_with_bounds(1, LATENCY_US_MAX, 2) else { return };
            seconds.push_back(Second { at, payments: 0, gmv_fen: 0, latency_us });
            while seconds.front().is_some_and(|first| first.at + WINDOW_SECONDS <= at) {
                seconds.pop_front();
            }
        }
        if let Some(second) = seconds.back_mut() {
            second.payments += 1;
            second.gmv_fen = second.gmv_fen.saturating_add(amount_fen);
            second.latency_us.saturating_record(u64::try_from(took.as_micros()).unwrap_or(LATENCY_US_MAX));
        }
    }

    /// Every second of the window, oldest first (seconds without payments too).
    pub fn seconds(&self) -> Vec<SecondFigures> {
        let now = now_seconds();
        let seconds = self.seconds.lock().unwrap_or_else(PoisonError::into_inner);
        let mut kept = seconds.iter().peekable();
        (now.saturating_sub(WINDOW_SECONDS - 1)..=now)
            .map(|at| {
                while kept.peek().is_some_and(|second| second.at < at) {
                    kept.next();
                }
                match kept.peek() {
                    Some(second) if second.at == at => {
                        SecondFigures { at, payments: second.payments, gmv_fen: second.gmv_fen }
                    }
                    _ => SecondFigures { at, payments: 0, gmv_fen: 0 },
                }
            })
            .collect()
    }

    /// The last `span` seconds together.
    pub fn summary(&self, span: u64) -> Summary {
        let since = now_seconds().saturating_sub(span);
        let seconds = self.seconds.lock().unwrap_or_else(PoisonError::into_inner);
        let mut summary = Summary { payments: 0, gmv_fen: 0, p50_us: 0, p99_us: 0 };
        let Ok(mut latency) = Histogram::<u64>::new_with_bounds(1, LATENCY_US_MAX, 2) else { return summary };
        for second in seconds.iter().filter(|second| second.at > since) {
            summary.payments += second.payments;
            summary.gmv_fen = summary.gmv_fen.saturating_add(second.gmv_fen);
            let _ = latency.add(&second.latency_us);
        }
        if !latency.is_empty() {
            summary.p50_us = latency.value_at_quantile(0.5);
            summary.p99_us = latency.value_at_quantile(0.99);
        }
        summary
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payments_add_up_in_their_second_and_the_summary() {
        let pulse = Pulse::default();
        pulse.record(1_000, Duration::from_millis(2));
        pulse.record(500, Duration::from_millis(8));
        let seconds = pulse.seconds();
        assert_eq!(seconds.len() as u64, WINDOW_SECONDS);
        let total: u64 = seconds.iter().map(|second| second.payments).sum();
        let gmv: u64 = seconds.iter().map(|second| second.gmv_fen).sum();
        assert_eq!((total, gmv), (2, 1_500));
        let summary = pulse.summary(60);
        assert_eq!((summary.payments, summary.gmv_fen), (2, 1_500));
        assert!(summary.p50_us >= 1_900 && summary.p50_us <= 2_100, "{}", summary.p50_us);
        assert!(summary.p99_us >= 7_900 && summary.p99_us <= 8_100, "{}", summary.p99_us);
    }
}
