//! Progress: simulated time, payments, GMV and payments per second — a bar
//! on a terminal, a line a minute otherwise (a full day runs for hours,
//! often under `nohup` or in a log), nothing with `--quiet`.

use std::cell::Cell;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::tally::Tally;
use super::{format_clock, format_count, format_yuan};

/// Redraw after this many operations (reading the tally takes its lock).
const UPDATE_EVERY: u64 = 4_096;
/// How often a line is written when stderr is not a terminal.
const LINE_EVERY: Duration = Duration::from_secs(60);

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Display {
    Bar,
    Lines,
    Nothing,
}

pub struct Progress {
    bar: ProgressBar,
    display: Display,
    operations: Cell<u64>,
    payments: Cell<u64>,
    last_line: Cell<Instant>,
}

impl Progress {
    pub fn new(payments: u64, display: Display) -> Progress {
        let target =
            if display == Display::Bar { ProgressDrawTarget::stderr_with_hz(8) } else { ProgressDrawTarget::hidden() };
        let bar = ProgressBar::with_draw_target(Some(payments), target);
        let style = ProgressStyle::with_template("{spinner} {elapsed_precise} [{bar:28}] {percent:>3}% {msg}")
            .map(|style| style.progress_chars("=> "))
            .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_message("setting up merchants and buyers");
        bar.enable_steady_tick(Duration::from_millis(200));
        Progress {
            bar,
            display,
            operations: Cell::new(0),
            payments: Cell::new(0),
            last_line: Cell::new(Instant::now()),
        }
    }

    pub fn note(&self, text: &str) {
        match self.display {
            Display::Bar => self.bar.println(text),
            Display::Lines => eprintln!("{text}"),
            Display::Nothing => {}
        }
    }

    pub fn setup_done(&self, elapsed: Duration) {
        self.note(&format!("setup done in {:.1} s; the day begins", elapsed.as_secs_f64()));
    }

    /// Counts an operation; true when the progress is due to be shown
    /// (`show`).
    pub fn advance(&self, timed: &sim::TimedOp, payment: bool) -> bool {
        let operations = self.operations.get() + 1;
        self.operations.set(operations);
        if payment {
            self.payments.set(self.payments.get() + 1);
        }
        // After the day, ticks come one at a time and each may take seconds.
        (operations.is_multiple_of(UPDATE_EVERY) || timed.is_settlement_tick()) && !timed.setup
    }

    /// Shows where the day is, as of `timed` and the answers in `tally`.
    pub fn show(&self, timed: &sim::TimedOp, tally: &Tally) {
        self.bar.set_position(self.payments.get());
        let rate = tally.day_started.map_or(0.0, |started| {
            tally.acknowledged.payments as f64 / Instant::now().duration_since(started).as_secs_f64().max(1e-3)
        });
        let mut message = format!(
            "sim {} | {} paid | GMV {} | {} payments/s",
            format_clock(timed.at),
            format_count(tally.acknowledged.payments),
            format_yuan(u128::from(tally.acknowledged.gmv)),
            format_count(rate as u64),
        );
        if tally.acknowledged.auto_confirmed > 0 {
            message.push_str(&format!(" | {} auto-confirmed", format_count(tally.acknowledged.auto_confirmed)));
        }
        let now = Instant::now();
        if self.display == Display::Lines && now.duration_since(self.last_line.get()) >= LINE_EVERY {
            self.last_line.set(now);
            let elapsed = self.bar.elapsed().as_secs();
            let percent = self.payments.get().saturating_mul(100) / self.bar.length().unwrap_or(1).max(1);
            eprintln!("[{:02}:{:02}:{:02}] {percent:>3}% {message}", elapsed / 3_600, elapsed / 60 % 60, elapsed % 60);
        }
        self.bar.set_message(message);
    }

    pub fn finish(&self) {
        if self.display == Display::Lines {
            eprintln!("the day is over: {} payments submitted and answered", format_count(self.payments.get()));
        }
        self.bar.set_position(self.payments.get());
        self.bar.finish_and_clear();
    }
}
