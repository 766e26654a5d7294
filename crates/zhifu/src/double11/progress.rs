//! The progress bar: simulated time, payments, GMV and payments per second.

use std::cell::Cell;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::tally::Tally;
use super::{format_clock, format_count, format_yuan};

/// Redraw after this many operations (reading the tally takes its lock).
const UPDATE_EVERY: u64 = 4_096;

pub struct Progress {
    bar: ProgressBar,
    operations: Cell<u64>,
    payments: Cell<u64>,
}

impl Progress {
    pub fn new(payments: u64, visible: bool) -> Progress {
        let target = if visible { ProgressDrawTarget::stderr_with_hz(8) } else { ProgressDrawTarget::hidden() };
        let bar = ProgressBar::with_draw_target(Some(payments), target);
        let style = ProgressStyle::with_template("{spinner} {elapsed_precise} [{bar:28}] {percent:>3}% {msg}")
            .map(|style| style.progress_chars("=> "))
            .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_message("setting up merchants and buyers");
        bar.enable_steady_tick(Duration::from_millis(200));
        Progress { bar, operations: Cell::new(0), payments: Cell::new(0) }
    }

    pub fn note(&self, text: &str) {
        self.bar.println(text);
    }

    pub fn setup_done(&self, elapsed: Duration) {
        self.note(&format!("setup done in {:.1} s; the day begins", elapsed.as_secs_f64()));
    }

    pub fn advance(&self, timed: &sim::TimedOp, payment: bool, tally: &Mutex<Tally>) {
        let operations = self.operations.get() + 1;
        self.operations.set(operations);
        if payment {
            self.payments.set(self.payments.get() + 1);
        }
        if !operations.is_multiple_of(UPDATE_EVERY) || timed.setup {
            return;
        }
        self.bar.set_position(self.payments.get());
        let Ok(tally) = tally.lock() else { return };
        let rate = tally.day_started.map_or(0.0, |started| {
            tally.acknowledged.payments as f64 / Instant::now().duration_since(started).as_secs_f64().max(1e-3)
        });
        self.bar.set_message(format!(
            "sim {} | {} paid | GMV {} | {} payments/s",
            format_clock(timed.at),
            format_count(tally.acknowledged.payments),
            format_yuan(u128::from(tally.acknowledged.gmv)),
            format_count(rate as u64),
        ));
    }

    pub fn finish(&self) {
        self.bar.set_position(self.payments.get());
        self.bar.finish_and_clear();
    }
}
