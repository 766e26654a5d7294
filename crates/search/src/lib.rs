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

/// A bracket this small is bisected: its entries share a few cache lines.
const BRACKET_NEAR_ENTRIES: usize = 32;

/// The partition point of `entries` (as [`partition_point_near`]), where
/// `value_of` gives each entry's leading key, ascending, and `value` is the
/// key sought. Each guess by proportion is made within the bracket that
/// holds the answer, so where keys bunch (trades shipped in bursts) the
/// guesses close in, where one guess over the whole run and a search outward
/// from it took two dozen probes, each a cache miss. A guess that leaves
/// more than half the bracket is followed by a halving: never more than
/// twice a binary search's probes.
pub fn partition_point_interpolated<T>(
    entries: &[T],
    value: u64,
    value_of: impl Fn(&T) -> u64,
    before: impl Fn(&T) -> bool,
) -> usize {
    // The answer is in `low..=high` throughout.
    let (mut low, mut high) = (0, entries.len());
    let mut halve = false;
    while high - low > BRACKET_NEAR_ENTRIES {
        let width = high - low;
        let guess = if halve {
            low + width / 2
        } else {
            let (first, last) = (value_of(&entries[low]), value_of(&entries[high - 1]));
            low + proportional_guess(value, first, last, width - 1)
        };
        if before(&entries[guess]) {
            low = guess + 1;
        } else {
            high = guess;
        }
        halve = high - low > width / 2;
    }
    low + entries[low..high].partition_point(before)
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
            prop_assert_eq!(partition_point_interpolated(&keys, probe, |&key| key, |&key| key < probe), expected);
        }
    }

    /// Probes of `partition_point_interpolated` to find `target` in `keys`.
    fn probes_to_find(keys: &[u64], target: u64) -> usize {
        let probes = std::cell::Cell::new(0);
        let found = partition_point_interpolated(
            keys,
            target,
            |&key| key,
            |&key| {
                probes.set(probes.get() + 1);
                key < target
            },
        );
        assert_eq!(found, keys.partition_point(|&key| key < target));
        probes.get()
    }

    /// Keys whose density changes smoothly (as a day's shipping does) are
    /// found in a few probes; keys in a burst after a quiet spell (the
    /// worst case) in no more than twice a binary search's.
    #[test]
    fn uneven_keys_are_found_in_few_probes() {
        // Gaps from 100 to 2,000 and back, over thousands of keys.
        let mut key = 0;
        let smooth: Vec<u64> = (0..65_536u64)
            .map(|at| {
                key += 1_050 + (950.0 * (at as f64 / 3_000.0).sin()) as u64;
                key
            })
            .collect();
        for at in [1, 100, 5_000, 30_000, 47_000, 65_000] {
            let (target, probes) = (smooth[at], probes_to_find(&smooth, smooth[at]));
            let one_guess = proportional_guess(target, smooth[0], smooth[65_535], smooth.len());
            let near = std::cell::Cell::new(0);
            partition_point_near(&smooth, one_guess, |&key| {
                near.set(near.get() + 1);
                key < target
            });
            // Five of them within the last 32 entries, a few cache lines.
            assert!(probes <= 14, "{probes} probes for the {at}th of a smooth run");
            // Far from the ends, one guess over the run misses by thousands.
            if at >= 5_000 {
                assert!(probes < near.get(), "{probes} probes where one guess took {}", near.get());
            }
        }
        let bunched: Vec<u64> =
            (0..65_536u64).map(|at| if at < 60_000 { at * 1_000 } else { 60_000_000_000 + at }).collect();
        for at in [1, 30_000, 59_999, 60_000, 63_000, 65_535] {
            let probes = probes_to_find(&bunched, bunched[at]);
            assert!(probes <= 2 * 17 + 5, "{probes} probes for the {at}th of a bunched run");
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
