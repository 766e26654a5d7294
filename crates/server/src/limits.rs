//! Rate limits: per API key, per client address, and per address for failed
//! sign-ins (a wrong or missing key, an unverifiable gateway request). GCRA
//! buckets from `governor`, keyed; each allows bursts of twice its rate.
//! Buckets of keys not seen for a while are dropped by `forget_idle`, so a
//! flood of new keys or addresses costs memory only while it lasts.

use std::net::IpAddr;
use std::num::NonZeroU32;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Failed sign-ins a second from one address (bursts of twice that): enough
/// for a client with a wrong key to see its error, far too few to guess.
pub const FAILURES_PER_SECOND_PER_ADDRESS: u32 = 20;

/// Requests a second allowed by each kind of limit (0: no limit).
#[derive(Clone, Copy, Debug)]
pub struct RateLimits {
    pub per_key: u32,
    pub per_address: u32,
}

pub struct Limiters {
    per_key: Option<DefaultKeyedRateLimiter<[u8; 32]>>,
    per_address: Option<DefaultKeyedRateLimiter<IpAddr>>,
    failures: DefaultKeyedRateLimiter<IpAddr>,
    /// Sign-ins with a password, per login: a guesser spread over many
    /// addresses still gets a few guesses a minute at any one account.
    sign_ins: DefaultKeyedRateLimiter<String>,
}

/// Password sign-ins a minute per login (bursts of twice that).
pub const SIGN_INS_PER_MINUTE_PER_LOGIN: u32 = 5;

fn keyed<K: std::hash::Hash + Eq + Clone>(per_second: u32) -> Option<DefaultKeyedRateLimiter<K>> {
    let rate = NonZeroU32::new(per_second)?;
    let burst = NonZeroU32::new(per_second.saturating_mul(2)).unwrap_or(rate);
    Some(RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)))
}

impl Limiters {
    pub fn new(limits: RateLimits) -> Limiters {
        Limiters {
            per_key: keyed(limits.per_key),
            per_address: keyed(limits.per_address),
            failures: keyed(FAILURES_PER_SECOND_PER_ADDRESS)
                .unwrap_or_else(|| RateLimiter::keyed(Quota::per_second(NonZeroU32::MIN))),
            sign_ins: RateLimiter::keyed(
                Quota::per_minute(NonZeroU32::new(SIGN_INS_PER_MINUTE_PER_LOGIN).unwrap_or(NonZeroU32::MIN))
                    .allow_burst(NonZeroU32::new(2 * SIGN_INS_PER_MINUTE_PER_LOGIN).unwrap_or(NonZeroU32::MIN)),
            ),
        }
    }

    /// A request with this key (by its hash) may go on.
    pub fn allow_key(&self, key_hash: &[u8; 32]) -> bool {
        self.per_key.as_ref().is_none_or(|limiter| limiter.check_key(key_hash).is_ok())
    }

    /// A request from this address may go on.
    pub fn allow_address(&self, address: IpAddr) -> bool {
        self.per_address.as_ref().is_none_or(|limiter| limiter.check_key(&address).is_ok())
    }

    /// A failed sign-in from this address: false once it has failed too often.
    pub fn allow_failure(&self, address: IpAddr) -> bool {
        self.failures.check_key(&address).is_ok()
    }

    /// A password sign-in to this login may be tried now.
    pub fn allow_sign_in(&self, login: &str) -> bool {
        self.sign_ins.check_key(&login.to_ascii_lowercase()).is_ok()
    }

    /// Drops the buckets of keys and addresses that are full again (idle).
    pub fn forget_idle(&self) {
        if let Some(limiter) = &self.per_key {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        if let Some(limiter) = &self.per_address {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        self.failures.retain_recent();
        self.failures.shrink_to_fit();
        self.sign_ins.retain_recent();
        self.sign_ins.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_gets_its_burst_then_waits_and_others_are_not_affected() {
        let limiters = Limiters::new(RateLimits { per_key: 5, per_address: 0 });
        let (busy, quiet) = ([1; 32], [2; 32]);
        let allowed = (0..100).filter(|_| limiters.allow_key(&busy)).count();
        assert!((10..=11).contains(&allowed), "a burst of twice the rate: {allowed}");
        assert!(limiters.allow_key(&quiet));
        let address = IpAddr::from([127, 0, 0, 1]);
        assert!((0..1_000).all(|_| limiters.allow_address(address)), "0: no limit");
        let failures = (0..1_000).filter(|_| limiters.allow_failure(address)).count();
        assert!(failures <= 2 * FAILURES_PER_SECOND_PER_ADDRESS as usize + 1, "{failures}");
    }
}
