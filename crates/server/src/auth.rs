//! Who is calling: API keys are stored only as SHA-256 hashes; the admin
//! key's hash is compared in constant time; each key has a rate limit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use platform::PartyKind;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::app::AppState;
use crate::error::ApiError;

/// The caller of a request, once its key is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Caller {
    Admin,
    Party { number: u64, kind: PartyKind },
}

impl Caller {
    /// The number idempotency keys are scoped by (0: the admin).
    pub fn scope(self) -> u64 {
        match self {
            Caller::Admin => 0,
            Caller::Party { number, .. } => number,
        }
    }

    pub fn require_admin(self) -> Result<(), ApiError> {
        if self == Caller::Admin { Ok(()) } else { Err(ApiError::forbidden()) }
    }

    /// A party of one of these kinds; the admin does not spend.
    pub fn require_party(self, kinds: &[PartyKind]) -> Result<u64, ApiError> {
        match self {
            Caller::Party { number, kind } if kinds.contains(&kind) => Ok(number),
            _ => Err(ApiError::forbidden()),
        }
    }
}

pub fn hash_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// A new random API key: `zk_` and 32 random bytes in hex.
pub fn new_key(prefix: &str) -> Result<String, ApiError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|_| ApiError::unavailable("no randomness for a new key"))?;
    Ok(format!("{prefix}{}", hex::encode(bytes)))
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Caller, ApiError> {
        let key = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|key| !key.is_empty() && key.len() <= 256)
            .ok_or_else(ApiError::unauthorized)?;
        let hash = hash_key(key);
        let caller = if bool::from(hash.ct_eq(&state.admin_key_hash)) {
            Caller::Admin
        } else {
            state
                .store
                .read(|platform| {
                    platform.party_by_key_hash(&hash).map(|p| Caller::Party { number: p.number, kind: p.kind })
                })
                .ok_or_else(ApiError::unauthorized)?
        };
        if !state.limiter.allow(&hash) {
            return Err(ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "too many requests for this key"));
        }
        Ok(caller)
    }
}

/// A token bucket per key: `per_second` requests a second, bursts of twice that.
pub struct RateLimiter {
    per_second: f64,
    buckets: Mutex<HashMap<[u8; 32], (f64, Instant)>>,
}

/// Keys tracked at most; past it the table starts afresh (a burst of new
/// keys must not grow memory without bound).
const RATE_LIMITED_KEYS_MAX: usize = 100_000;

impl RateLimiter {
    pub fn new(per_second: u32) -> RateLimiter {
        RateLimiter { per_second: f64::from(per_second.max(1)), buckets: Mutex::new(HashMap::new()) }
    }

    pub fn allow(&self, key_hash: &[u8; 32]) -> bool {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.len() >= RATE_LIMITED_KEYS_MAX && !buckets.contains_key(key_hash) {
            buckets.clear();
        }
        let now = Instant::now();
        let burst = self.per_second * 2.0;
        let (tokens, last) = buckets.entry(*key_hash).or_insert((burst, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * self.per_second).min(burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}
