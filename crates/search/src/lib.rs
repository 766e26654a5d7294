//! Searching sorted runs whose keys are spread about evenly — hashes, the
//! offsets of similar-sized frames, due times of a day's trades. A guess by
//! proportion lands within a few entries of the answer; a binary search over
//! a full day's millions takes twenty steps, most of them cache misses (the
//! `out_trade_no` index and the archive's frame table were 8% and 5% of the
//! writer's time at a full Double Eleven's size).

/// Where `value` falls in `low..=high`, as an index into `len` entries
/// spread evenly over that range (clamped to `0..=len`).
pub fn proportional_guess(value: u64, low: u64, high: u64, len: usize) -> usize {
    if value <= low || high <= low {
        return 0;
    }
    let share = u128::from(value - low) * len as u128 / u128::from(high - low);
    usize::try_from(share).unwrap_or(usize::MAX).min(len)
}

/// The partition point of `entries` — the index of the first entry for
/// which `before` is false, where `before` holds for a prefix and not after
/// it, as for `slice::partition_point` — searched outward from `guess` in
/// steps that double, then by bisection between the last two probes. Exact
/// for any guess; a good guess makes it a few probes next to each other.
pub fn partition_point_near<T>(entries: &[T], guess: usize, before: impl Fn(&T) -> bool) -> usize {
    let guess = guess.min(entries.len());
    let (low, high) = if entries.get(guess).is_some_and(&before) {
        // Past the guess: `low` is just past an entry known to be before.
        let (mut low, mut step) = (guess + 1, 1);
        loop {
            let probe = guess.saturating_add(step);
            match entries.get(probe) {
                Some(entry) if before(entry) => {
                    low = probe + 1;
                    step *= 2;
                }
                Some(_) => break (low, probe),
                None => break (low, entries.len()),
            }
        }
    } else {
        // At or before the guess: `high` is an entry known not to be before
        // (or the end).
        let (mut high, mut step) = (guess, 1);
        loop {
            let Some(probe) = guess.checked_sub(step) else { break (0, high) };
            if before(&entries[probe]) {
                break (probe + 1, high);
            }
            high = probe;
            step *= 2;
        }
    };
    low + entries[low..high].partition_point(|entry| before(entry))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Whatever the guess, the answer is the binary search's, for keys
        /// crowded (equal, close) or far apart.
        #[test]
        fn agrees_with_partition_point(
            gaps in proptest::collection::vec(prop_oneof![3 => 0..3u64, 1 => 0..1_000_000u64], 0..400),
            probe in 0..2_000_000u64,
            guess in 0..500usize,
        ) {
            let mut key = 0;
            let keys: Vec<u64> = gaps.iter().map(|gap| { key += gap; key }).collect();
            let expected = keys.partition_point(|&key| key < probe);
            prop_assert_eq!(partition_point_near(&keys, guess, |&key| key < probe), expected);
            let (low, high) = (keys.first().copied().unwrap_or(0), keys.last().copied().unwrap_or(0));
            let proportional = proportional_guess(probe, low, high, keys.len());
            prop_assert!(proportional <= keys.len());
            prop_assert_eq!(partition_point_near(&keys, proportional, |&key| key < probe), expected);
        }
    }

    #[test]
    fn an_even_spread_is_guessed_close() {
        let keys: Vec<u64> = (0..1_000_000u64).map(|at| at * 4_096 + at % 7).collect();
        let probe = 300_001 * 4_096;
        let guess = proportional_guess(probe, keys[0], keys[keys.len() - 1], keys.len());
        assert!(guess.abs_diff(300_001) <= 1, "guess {guess}");
        assert_eq!(partition_point_near(&keys, guess, |&key| key < probe), 300_001);
    }
}
