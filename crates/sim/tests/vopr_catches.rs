//! The simulator's checks catch a bug the ledger cannot see: a refund that
//! books the fee it returns to the merchant but leaves out its transfer.
//! Every transfer is still double-entry, so the ledger balances; the
//! merchant's books no longer match the wallet. (Its own process: the bug
//! is switched on for the whole binary.)

use sim::vopr::Vopr;

#[test]
fn a_refund_that_forgets_the_fee_is_caught_with_its_seed_and_step() {
    platform::faults::inject_refund_forgets_fee();
    let failure = (1..=20)
        .find_map(|seed| Vopr::new(seed).and_then(|vopr| vopr.run(3_000)).err())
        .expect("twenty seeds refund settled trades with fees: one must catch the bug");
    eprintln!("caught: {failure}");
    assert!(failure.what.contains("merchant"), "caught by the merchants' books: {failure}");
    assert!(failure.step > 0);
    // The seed and step it names replay to the same failure.
    let again = Vopr::new(failure.seed).and_then(|vopr| vopr.run(failure.step)).expect_err("the replay fails too");
    assert_eq!((again.seed, again.step, again.what.as_str()), (failure.seed, failure.step, failure.what.as_str()));
}
