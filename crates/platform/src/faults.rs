//! Bugs on purpose, for the tests that prove the simulator catches them
//! (`sim/tests/vopr_catches.rs`). Only a build with the `fault-injection`
//! feature can switch one on; otherwise each question is a constant `false`.

#[cfg(feature = "fault-injection")]
use std::sync::atomic::{AtomicBool, Ordering};

#[cfg(feature = "fault-injection")]
static REFUND_FORGETS_FEE: AtomicBool = AtomicBool::new(false);

/// From now on a refund of a settled trade books the fee it returns to the
/// merchant but leaves the transfer out: the ledger still balances, the
/// merchant's books do not.
#[cfg(feature = "fault-injection")]
pub fn inject_refund_forgets_fee() {
    REFUND_FORGETS_FEE.store(true, Ordering::SeqCst);
}

#[cfg(feature = "fault-injection")]
pub(crate) fn refund_forgets_fee() -> bool {
    REFUND_FORGETS_FEE.load(Ordering::Relaxed)
}

#[cfg(not(feature = "fault-injection"))]
pub(crate) const fn refund_forgets_fee() -> bool {
    false
}

#[cfg(feature = "fault-injection")]
static REVOKE_SPARES_READ_KEYS: AtomicBool = AtomicBool::new(false);

/// From now on revoking a party's keys leaves its read-only keys working:
/// no money moves wrongly, yet a leaked key still reads.
#[cfg(feature = "fault-injection")]
pub fn inject_revoke_spares_read_keys() {
    REVOKE_SPARES_READ_KEYS.store(true, Ordering::SeqCst);
}

#[cfg(feature = "fault-injection")]
pub(crate) fn revoke_spares_read_keys() -> bool {
    REVOKE_SPARES_READ_KEYS.load(Ordering::Relaxed)
}

#[cfg(not(feature = "fault-injection"))]
pub(crate) const fn revoke_spares_read_keys() -> bool {
    false
}
