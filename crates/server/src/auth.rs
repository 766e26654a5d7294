//! Who is calling: API keys are stored only as SHA-256 hashes; the admin
//! key's hash is compared in constant time; each key has a rate limit, and
//! failed sign-ins from one address have one too (`limits`).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use platform::{PartyKind, PartyNumber};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::app::AppState;
use crate::error::ApiError;

/// The caller of a request, once its key is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Caller {
    Admin,
    Party { number: PartyNumber, kind: PartyKind },
}

impl Caller {
    /// The number idempotency keys are scoped by (0: the admin).
    pub fn scope(self) -> PartyNumber {
        match self {
            Caller::Admin => PartyNumber::new(0),
            Caller::Party { number, .. } => number,
        }
    }

    pub fn require_admin(self) -> Result<(), ApiError> {
        if self == Caller::Admin { Ok(()) } else { Err(ApiError::forbidden()) }
    }

    /// A party of one of these kinds; the admin does not spend.
    pub fn require_party(self, kinds: &[PartyKind]) -> Result<PartyNumber, ApiError> {
        match self {
            Caller::Party { number, kind } if kinds.contains(&kind) => Ok(number),
            _ => Err(ApiError::forbidden()),
        }
    }
}

pub fn rate_limited(message: &str) -> ApiError {
    ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
}

pub fn hash_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// A new random API key: `zk_` and 32 random bytes in hex.
pub fn new_key(prefix: &str) -> Result<String, ApiError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|_| ApiError::internal("no randomness for a new key"))?;
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
            .filter(|key| !key.is_empty() && key.len() <= 256);
        let hash = key.map(hash_key);
        let caller = match hash {
            Some(hash) if bool::from(hash.ct_eq(&state.admin_key_hash)) => Some(Caller::Admin),
            Some(hash) => state.store.read(|platform| {
                platform.party_by_key_hash(&hash).map(|p| Caller::Party { number: p.number, kind: p.kind })
            }),
            None => None,
        };
        let (Some(caller), Some(hash)) = (caller, hash) else {
            // Failing too often from one address is answered as a rate limit.
            let address = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|info| info.0.ip());
            if address.is_some_and(|address| !state.limiters.allow_failure(address)) {
                return Err(rate_limited("too many failed sign-ins from this address"));
            }
            return Err(ApiError::unauthorized());
        };
        if !state.limiters.allow_key(&hash) {
            return Err(rate_limited("too many requests for this key"));
        }
        Ok(caller)
    }
}
