//! The whole-platform simulator, on a few seeds: every product, clock
//! jumps, retries and restarts, with the books checked after every step.
//! Longer runs: `zhifu vopr --minutes N` (docs/testing.md).

use sim::vopr::Vopr;

const SEEDS: u64 = 4;
const STEPS: u64 = 2_500;

#[test]
fn seeds_run_with_every_check_holding() {
    for seed in 1..=SEEDS {
        let report = Vopr::new(seed).and_then(|vopr| vopr.run(STEPS)).unwrap_or_else(|failure| panic!("{failure}"));
        assert_eq!(report.steps, STEPS);
        assert!(report.restarts > 0, "seed {seed} never restarted");
        // The run did what it is for: money moved through every product.
        for kind in [
            "TradeUpdated",
            "RefundCreated",
            "LoanUpdated",
            "RedPacketClaimed",
            "FundMoved",
            "CouponIssued",
            "FeeScheduleSet",
            "KeysChanged",
            "EndpointUpdated",
            "EventResent",
        ] {
            assert!(
                report.answers.get(kind).is_some_and(|&count| count > 0),
                "seed {seed} never answered {kind}: {:?}",
                report.answers
            );
        }
    }
}

#[test]
fn a_seed_replays_exactly() {
    let run = || Vopr::new(7).and_then(|vopr| vopr.run(1_000)).unwrap_or_else(|failure| panic!("{failure}"));
    let (first, second) = (run(), run());
    assert_eq!(first, second);
    let other = Vopr::new(8).and_then(|vopr| vopr.run(1_000)).unwrap_or_else(|f| panic!("{f}"));
    assert_ne!(first.digest, other.digest, "different seeds, different days");
}
