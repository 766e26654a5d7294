//! The shape of Double Eleven 2013 (../shared/ANCHORS.md): 100 million yuan
//! after 55 s, 1 billion after 6 min 7 s, 10 billion by 05:49, 35.019
//! billion by midnight. Between those milestones the curve follows a plausible
//! day (the post-midnight rush fading through the night, a morning, an
//! afternoon and an evening peak); at the milestones it is exact.

pub const DAY_SECONDS: u64 = 86_400;
pub const DAY_NANOS: u64 = DAY_SECONDS * ledger::NANOS_PER_SECOND;
/// The day's payments and sales at full scale.
pub const PAYMENTS_2013: u64 = 188_000_000;
pub const GMV_2013_FEN: u64 = 3_501_900_000_000;

/// Sales reached by a time of the day, as reported on the day.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Milestone {
    pub seconds: u64,
    pub gmv_fen: u64,
    pub label: &'static str,
}

pub const MILESTONES_2013: [Milestone; 4] = [
    Milestone { seconds: 55, gmv_fen: 10_000_000_000, label: "100 million yuan at 00:00:55" },
    Milestone { seconds: 367, gmv_fen: 100_000_000_000, label: "1 billion at 00:06:07" },
    Milestone { seconds: 20_940, gmv_fen: 1_000_000_000_000, label: "10 billion at 05:49" },
    Milestone { seconds: DAY_SECONDS, gmv_fen: GMV_2013_FEN, label: "35.019 billion at midnight" },
];

/// The share of the day's sales made by each second, cumulated.
pub struct DayCurve {
    /// `cumulative[s]`: the share made before second `s` (0 at 0, 1 at 86,400).
    cumulative: Vec<f64>,
}

impl DayCurve {
    pub fn double_eleven_2013() -> DayCurve {
        // Each stretch between milestones gets exactly its share, spread by
        // the day's shape...
        let mut density = Vec::with_capacity(DAY_SECONDS as usize);
        let mut start = 0u64;
        let mut share_before = 0.0;
        for milestone in MILESTONES_2013 {
            let share_after = milestone.gmv_fen as f64 / GMV_2013_FEN as f64;
            let weights: Vec<f64> = (start..milestone.seconds).map(|second| shape(second as f64 + 0.5)).collect();
            let total: f64 = weights.iter().sum();
            density.extend(weights.iter().map(|weight| (share_after - share_before) * weight / total));
            start = milestone.seconds;
            share_before = share_after;
        }
        // ...then smoothed (over a window that is narrow near midnight, where
        // the day is steep, and up to half an hour later), so that no step
        // shows where two stretches meet, and put back to their shares.
        let smoothed = smooth(&density);
        let mut cumulative = Vec::with_capacity(DAY_SECONDS as usize + 1);
        cumulative.push(0.0);
        let (mut start, mut share_before) = (0usize, 0.0);
        for milestone in MILESTONES_2013 {
            let end = milestone.seconds as usize;
            let share_after = milestone.gmv_fen as f64 / GMV_2013_FEN as f64;
            let total: f64 = smoothed[start..end].iter().sum();
            let mut running = share_before;
            for value in &smoothed[start..end] {
                running += (share_after - share_before) * value / total;
                cumulative.push(running);
            }
            // Exact at the milestone, whatever the rounding on the way.
            if let Some(last) = cumulative.last_mut() {
                *last = share_after;
            }
            start = end;
            share_before = share_after;
        }
        debug_assert_eq!(cumulative.len(), DAY_SECONDS as usize + 1);
        DayCurve { cumulative }
    }

    /// The share of the day's sales made by `seconds` into the day.
    pub fn share_by(&self, seconds: f64) -> f64 {
        let clamped = seconds.clamp(0.0, DAY_SECONDS as f64);
        let whole = clamped.floor() as usize;
        if whole >= DAY_SECONDS as usize {
            return 1.0;
        }
        let fraction = clamped - whole as f64;
        self.cumulative[whole] + (self.cumulative[whole + 1] - self.cumulative[whole]) * fraction
    }

    /// When the day has made `share` of its sales (the inverse of `share_by`).
    pub fn time_of_share(&self, share: f64) -> f64 {
        let share = share.clamp(0.0, 1.0);
        // The first second whose end reaches the share.
        let second = self.cumulative.partition_point(|&made| made < share).saturating_sub(1);
        let second = second.min(DAY_SECONDS as usize - 1);
        let (low, high) = (self.cumulative[second], self.cumulative[second + 1]);
        let within = if high > low { (share - low) / (high - low) } else { 0.0 };
        second as f64 + within.clamp(0.0, 1.0)
    }

    /// The share of the day's sales made during one second of it.
    pub fn share_in_second(&self, second: u64) -> f64 {
        let second = second.min(DAY_SECONDS - 1) as usize;
        self.cumulative[second + 1] - self.cumulative[second]
    }
}

/// A moving average whose half-width is a tenth of the time since
/// midnight, at most 15 minutes.
fn smooth(values: &[f64]) -> Vec<f64> {
    let mut prefix = Vec::with_capacity(values.len() + 1);
    prefix.push(0.0);
    for value in values {
        prefix.push(prefix[prefix.len() - 1] + value);
    }
    (0..values.len())
        .map(|second| {
            let half = (second / 10).min(900);
            let (low, high) = (second.saturating_sub(half), (second + half + 1).min(values.len()));
            (prefix[high] - prefix[low]) / (high - low) as f64
        })
        .collect()
}

/// Relative activity at a time of day (seconds); only its shape within each
/// stretch between milestones matters.
fn shape(seconds: f64) -> f64 {
    let hours = seconds / 3_600.0;
    let bump = |centre: f64, width: f64| (-((hours - centre) / width).powi(2) / 2.0).exp();
    if seconds < 55.0 {
        // Checkouts opening as midnight strikes.
        0.4 + seconds / 55.0
    } else if seconds < 367.0 {
        (-(seconds - 55.0) / 400.0).exp()
    } else if seconds < 20_940.0 {
        // The night: the rush fading, then the early hours.
        (-(seconds - 367.0) / 3_000.0).exp() + 0.12
    } else {
        0.25 + 0.6 * bump(10.5, 1.5) + 0.7 * bump(15.0, 2.0) + 1.1 * bump(21.5, 1.3) + 0.4 * bump(23.8, 0.3)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_curve_passes_through_2013s_milestones() {
        let curve = DayCurve::double_eleven_2013();
        for milestone in MILESTONES_2013 {
            let share = milestone.gmv_fen as f64 / GMV_2013_FEN as f64;
            assert!((curve.share_by(milestone.seconds as f64) - share).abs() < 1e-12, "{}", milestone.label);
            assert!((curve.time_of_share(share) - milestone.seconds as f64).abs() < 1e-6, "{}", milestone.label);
        }
        assert_eq!(curve.share_by(0.0), 0.0);
        assert_eq!(curve.share_by(1e9), 1.0);
    }

    #[test]
    fn the_first_minutes_are_the_steepest() {
        let curve = DayCurve::double_eleven_2013();
        let peak = (0..DAY_SECONDS).map(|s| curve.share_in_second(s)).fold(0.0, f64::max);
        let after_six_minutes = (400..DAY_SECONDS).map(|s| curve.share_in_second(s)).fold(0.0, f64::max);
        assert!(peak > 2.0 * after_six_minutes, "peak {peak} vs later {after_six_minutes}");
        assert!(peak > 5.0 / DAY_SECONDS as f64, "the peak is several times the day's mean");
    }

    #[test]
    fn no_step_where_two_stretches_meet() {
        let curve = DayCurve::double_eleven_2013();
        for boundary in [367, 20_940] {
            let (before, after) = (curve.share_in_second(boundary - 1), curve.share_in_second(boundary));
            assert!((before - after).abs() < 0.05 * before, "at {boundary}: {before} then {after}");
        }
    }

    #[test]
    fn time_of_share_inverts_share_by() {
        let curve = DayCurve::double_eleven_2013();
        for step in 0..=1_000 {
            let share = f64::from(step) / 1_000.0;
            let at = curve.time_of_share(share);
            assert!((curve.share_by(at) - share).abs() < 1e-9, "share {share} at {at}");
        }
    }
}
