//! The simulator's model of keys catches a revoke that leaves read-only
//! keys working: nothing in the ledger is wrong, yet a leaked key still
//! reads. (Its own process: the bug is switched on for the whole binary.)

use sim::vopr::Vopr;

#[test]
fn a_revoke_that_spares_read_only_keys_is_caught() {
    platform::faults::inject_revoke_spares_read_keys();
    let failure = (1..=20)
        .find_map(|seed| Vopr::new(seed).and_then(|vopr| vopr.run(5_000)).err())
        .expect("twenty seeds add read-only keys and revoke: one must catch the bug");
    eprintln!("caught: {failure}");
    assert!(failure.what.contains("key"), "caught by the model of keys: {failure}");
}
