//! What to do when something that cannot happen does: stop. A broken
//! invariant means the state may no longer be what its log replays to, or
//! money may have moved where the books say it did not; carrying on would
//! serve that state. The panic ends the process (the binary aborts on any
//! panic), and a restart replays the log into a state that can be trusted —
//! or stops at the same place, loudly, for someone to look.

/// Stops: `what` cannot happen.
#[allow(clippy::panic)] // the one place the platform panics on purpose
#[track_caller]
pub(crate) fn broken(what: std::fmt::Arguments<'_>) -> ! {
    panic!("broken invariant: {what}")
}

/// Stops unless `holds`.
#[track_caller]
pub(crate) fn check(holds: bool, what: std::fmt::Arguments<'_>) {
    if !holds {
        broken(what);
    }
}
