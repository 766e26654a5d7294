//! Who is calling, and what they may do. API keys are stored only as
//! SHA-256 hashes (a party may hold several: rolled ones until they expire,
//! read-only ones that may only GET); the admin key's hash is compared in
//! constant time; staff sign in with a password (Argon2id) and get a session
//! token, signed under the platform's secret and checked on every request.
//! Each key has a rate limit, and failed sign-ins from one address and
//! password sign-ins per login have one too (`limits`).
//!
//! What each caller may do is one table, `Duty`: routes ask for a duty, and
//! the table in `docs/security.md` is this one written out.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use platform::{Action, Actor, AuditNote, PartyKind, PartyNumber, StaffNumber, StaffRole, Target, Timestamp};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::app::AppState;
use crate::error::ApiError;

/// The caller of a request, once its key or session is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Caller {
    /// The operator's admin key.
    Admin,
    /// A member of staff, signed in.
    Staff {
        number: StaffNumber,
        role: StaffRole,
    },
    Party {
        number: PartyNumber,
        kind: PartyKind,
    },
}

/// What an operator's route needs of its caller (parties have their own
/// routes, `require_party`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Duty {
    /// Reading anything: the admin key and every role.
    Read,
    /// Refunds, closes, resends, dispute decisions: admin and support.
    Support,
    /// Bills and reconciliation: admin and finance.
    Finance,
    /// Everything else an operator does (settings, parties, staff, keys): admin.
    Administer,
}

impl Duty {
    pub fn allows(self, role: StaffRole) -> bool {
        matches!(
            (self, role),
            (_, StaffRole::Admin)
                | (Duty::Read, _)
                | (Duty::Support, StaffRole::Support)
                | (Duty::Finance, StaffRole::Finance)
        )
    }
}

impl Caller {
    /// The number idempotency keys are scoped by (0: the admin key; staff
    /// by their number, which no party shares).
    pub fn scope(self) -> PartyNumber {
        match self {
            Caller::Admin => PartyNumber::new(0),
            Caller::Staff { number, .. } => PartyNumber::new(number.get()),
            Caller::Party { number, .. } => number,
        }
    }

    /// The admin key or staff: reads every party's objects.
    pub fn is_operator(self) -> bool {
        !matches!(self, Caller::Party { .. })
    }

    /// Who the audit log names for this caller.
    pub fn actor(self) -> Actor {
        match self {
            Caller::Admin => Actor::AdminKey,
            Caller::Staff { number, .. } => Actor::Staff(number),
            Caller::Party { number, .. } => Actor::Party(number),
        }
    }

    /// An operator with this duty (the admin key has every duty).
    pub fn require(self, duty: Duty) -> Result<Actor, ApiError> {
        match self {
            Caller::Admin => Ok(Actor::AdminKey),
            Caller::Staff { number, role } if duty.allows(role) => Ok(Actor::Staff(number)),
            _ => Err(ApiError::forbidden()),
        }
    }

    pub fn require_admin(self) -> Result<Actor, ApiError> {
        self.require(Duty::Administer)
    }

    /// A party of one of these kinds; operators do not spend.
    pub fn require_party(self, kinds: &[PartyKind]) -> Result<PartyNumber, ApiError> {
        match self {
            Caller::Party { number, kind } if kinds.contains(&kind) => Ok(number),
            _ => Err(ApiError::forbidden()),
        }
    }
}

/// An operator's action wrapped with its audit line (`Action::Audited`);
/// a party's action as it is.
pub fn audited(caller: Caller, request: &RequestTag, what: &str, target: Target, action: Action) -> Action {
    if caller.is_operator() { always_audited(caller, request, what, target, action) } else { action }
}

/// An action with its audit line whoever acts (changes of keys).
pub fn always_audited(caller: Caller, request: &RequestTag, what: &str, target: Target, action: Action) -> Action {
    let note = AuditNote { actor: caller.actor(), action: what.to_string(), target, request_id: request.0.clone() };
    Action::Audited { note, action: Box::new(action) }
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

/// The bearer token of a request, if it has a plausible one.
fn bearer(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|key| !key.is_empty() && key.len() <= 256)
}

/// The hash of the key a request presents (to roll the caller's own key).
pub struct PresentedKey(pub [u8; 32]);

impl FromRequestParts<Arc<AppState>> for PresentedKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &Arc<AppState>) -> Result<PresentedKey, ApiError> {
        bearer(parts).map(|key| PresentedKey(hash_key(key))).ok_or_else(ApiError::unauthorized)
    }
}

/// The request's id (`x-request-id`), for the audit log: the server's own,
/// or the client's if it sent a short printable one.
pub struct RequestTag(pub String);

/// Request ids kept in the audit log are at most this long.
const REQUEST_ID_CHARS_MAX: usize = 64;

impl FromRequestParts<Arc<AppState>> for RequestTag {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &Arc<AppState>) -> Result<RequestTag, ApiError> {
        let id = parts
            .headers
            .get("x-request-id")
            .and_then(|value| value.to_str().ok())
            .filter(|id| id.len() <= REQUEST_ID_CHARS_MAX && id.chars().all(|c| c.is_ascii_graphic()))
            .unwrap_or("-");
        Ok(RequestTag(id.to_string()))
    }
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Caller, ApiError> {
        let key = bearer(parts);
        let hash = key.map(hash_key);
        let now = state.clock.now();
        let found = match (key, hash) {
            (_, Some(hash)) if bool::from(hash.ct_eq(&state.admin_key_hash)) => Some((Caller::Admin, false)),
            (Some(token), _) if token.starts_with(SESSION_PREFIX) || token.starts_with(PARTY_SESSION_PREFIX) => {
                state.sessions.verify(state, token, now).map(|caller| (caller, false))
            }
            (_, Some(hash)) => state.store.read(|platform| {
                let grant = platform.key_grant(&hash).filter(|grant| grant.works_at(now))?;
                let party = platform.party(grant.party)?;
                Some((Caller::Party { number: party.number, kind: party.kind }, grant.read_only))
            }),
            _ => None,
        };
        let (Some((caller, read_only)), Some(hash)) = (found, hash) else {
            // Failing too often from one address is answered as a rate limit.
            // Only a credential that fails counts: a request without one
            // guesses nothing, and is told what it lacks (401).
            let address = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|info| info.0.ip());
            if key.is_some() && address.is_some_and(|address| !state.limiters.allow_failure(address)) {
                return Err(rate_limited("too many failed sign-ins from this address"));
            }
            return Err(ApiError::unauthorized());
        };
        if !state.limiters.allow_key(&hash) {
            return Err(rate_limited("too many requests for this key"));
        }
        if read_only && !matches!(parts.method, Method::GET | Method::HEAD) {
            return Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", "this key is restricted to reading"));
        }
        Ok(caller)
    }
}

/// Staff session tokens start so.
pub const SESSION_PREFIX: &str = "zst_";
/// A party's session tokens (the cashier's buyers, the portal's merchants) start so.
pub const PARTY_SESSION_PREFIX: &str = "zps_";
/// A staff session lasts this long (clock time).
pub const SESSION_NANOS: u64 = 8 * 3_600 * 1_000_000_000;

/// Staff sessions: tokens `zst_<staff>_<expiry>_<mac>`, the MAC under a key
/// derived from the platform's secret over the staff number, the expiry and
/// the account's password hash — so every node accepts them, a restart
/// keeps them, and a new password ends them. Signed-out tokens (and the
/// cashier's signed-out buyer cookies) are remembered here until they
/// would have expired.
#[derive(Default)]
pub struct Sessions {
    ended: Mutex<HashMap<[u8; 32], Timestamp>>,
}

impl Sessions {
    /// A new session token for `staff`, and when it expires.
    pub fn open(
        &self,
        state: &AppState,
        staff: &platform::Staff,
        now: Timestamp,
    ) -> Result<(String, Timestamp), ApiError> {
        let expires_at = now.plus_nanos(SESSION_NANOS);
        let mac = session_mac(state, staff, expires_at)?;
        let token = format!("{SESSION_PREFIX}{:x}_{:x}_{}", staff.number.get(), expires_at.nanos(), hex::encode(mac));
        Ok((token, expires_at))
    }

    /// A new session token for a party signed in with its password, and
    /// when it expires. The MAC covers the password hash: a new password
    /// ends every session.
    pub fn open_party(
        &self,
        state: &AppState,
        party: PartyNumber,
        password_hash: &str,
        lifetime_nanos: u64,
        now: Timestamp,
    ) -> Result<(String, Timestamp), ApiError> {
        let expires_at = now.plus_nanos(lifetime_nanos);
        let mac = party_session_mac(state, party, expires_at, password_hash)?;
        let token = format!("{PARTY_SESSION_PREFIX}{:x}_{:x}_{}", party.get(), expires_at.nanos(), hex::encode(mac));
        Ok((token, expires_at))
    }

    /// The caller a session token stands for, if it is ours, unexpired and
    /// not signed out.
    pub fn verify(&self, state: &AppState, token: &str, now: Timestamp) -> Option<Caller> {
        if token.starts_with(PARTY_SESSION_PREFIX) {
            return self.verify_party(state, token, now);
        }
        let mut parts = token.strip_prefix(SESSION_PREFIX)?.splitn(3, '_');
        let number = StaffNumber::new(u64::from_str_radix(parts.next()?, 16).ok()?);
        let expires_at = Timestamp::from_nanos(u64::from_str_radix(parts.next()?, 16).ok()?);
        let mac = hex::decode(parts.next()?).ok()?;
        if now >= expires_at || self.is_ended(token) {
            return None;
        }
        let staff = state.store.read(|p| p.staff(number).cloned())?;
        let expected = session_mac(state, &staff, expires_at).ok()?;
        bool::from(expected.as_slice().ct_eq(&mac)).then_some(Caller::Staff { number, role: staff.role })
    }

    fn verify_party(&self, state: &AppState, token: &str, now: Timestamp) -> Option<Caller> {
        let mut parts = token.strip_prefix(PARTY_SESSION_PREFIX)?.splitn(3, '_');
        let party = PartyNumber::new(u64::from_str_radix(parts.next()?, 16).ok()?);
        let expires_at = Timestamp::from_nanos(u64::from_str_radix(parts.next()?, 16).ok()?);
        let mac = hex::decode(parts.next()?).ok()?;
        if now >= expires_at || self.is_ended(token) {
            return None;
        }
        let (kind, hash) = state.store.read(|p| {
            let kind = p.party(party)?.kind;
            Some((kind, p.party_password_hash(party)?.to_string()))
        })?;
        let expected = party_session_mac(state, party, expires_at, &hash).ok()?;
        bool::from(expected.as_slice().ct_eq(&mac)).then_some(Caller::Party { number: party, kind })
    }

    /// Signs a token out (it stops working on this node at once).
    pub fn end(&self, token: &str, expires_at: Timestamp, now: Timestamp) {
        let mut ended = self.ended.lock().unwrap_or_else(PoisonError::into_inner);
        ended.retain(|_, until| *until > now);
        ended.insert(hash_key(token), expires_at);
    }

    fn is_ended(&self, token: &str) -> bool {
        self.ended.lock().unwrap_or_else(PoisonError::into_inner).contains_key(&hash_key(token))
    }
}

fn party_session_mac(
    state: &AppState,
    party: PartyNumber,
    expires_at: Timestamp,
    hash: &str,
) -> Result<[u8; 32], ApiError> {
    let mut subject = party.get().to_le_bytes().to_vec();
    subject.extend_from_slice(&expires_at.nanos().to_le_bytes());
    state.derive(b"party-session", &subject, hash.as_bytes())
}

fn session_mac(state: &AppState, staff: &platform::Staff, expires_at: Timestamp) -> Result<[u8; 32], ApiError> {
    let mut subject = staff.number.get().to_le_bytes().to_vec();
    subject.extend_from_slice(&expires_at.nanos().to_le_bytes());
    state.derive(b"staff-session", &subject, staff.password_hash.as_bytes())
}

/// The party of `kind` whose login and password these are, with its
/// password hash (for its session's MAC); `None` for a wrong password, an
/// unknown login or a party of another kind — each after the same Argon2
/// work, so they cannot be told apart by time.
pub async fn party_by_password(
    state: &AppState,
    login: &str,
    password: &str,
    kind: PartyKind,
) -> Result<Option<(PartyNumber, String)>, ApiError> {
    let found = state.store.read(|p| {
        let (party, hash) = p.party_login(login)?;
        (p.party(party)?.kind == kind).then(|| (party, hash.to_string()))
    });
    let phc = found.as_ref().map(|(_, hash)| hash.clone());
    let password = password.to_string();
    let matches =
        password_work(state, move || password_matches(&password, phc.as_deref().unwrap_or(decoy_hash()))).await?;
    Ok(found.filter(|_| matches))
}

/// Argon2 hashings at once, server-wide.
pub const PASSWORD_WORK_MAX: usize = 2;
/// How long a sign-in waits for its turn to hash before it is turned away.
const PASSWORD_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs Argon2 work (`work`) off the async workers, at most
/// `PASSWORD_WORK_MAX` at once; `429` if its turn does not come in time.
pub async fn password_work<T: Send + 'static>(
    state: &AppState,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    let permit = tokio::time::timeout(PASSWORD_WAIT, state.password_work.acquire())
        .await
        .map_err(|_| rate_limited("too many sign-ins at once: try again"))?
        .map_err(|_| ApiError::unavailable("the server is stopping"))?;
    let result = tokio::task::spawn_blocking(work).await.map_err(|_| ApiError::internal("the request was dropped"));
    drop(permit);
    result
}

/// Argon2id of a random password nobody has, made once: verified against
/// for unknown logins, so they take as long as known ones.
pub fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| {
        let mut bytes = [0u8; 16];
        let _ = getrandom::fill(&mut bytes);
        hash_password(&hex::encode(bytes)).unwrap_or_default()
    })
}

/// Argon2id with the crate's defaults (19 MiB, 2 passes): a PHC string.
pub fn hash_password(password: &str) -> Result<String, ApiError> {
    use argon2::password_hash::{PasswordHasher, SaltString, rand_core::OsRng};
    let salt = SaltString::generate(&mut OsRng);
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|_| ApiError::internal("a password could not be hashed"))
}

pub fn password_matches(password: &str, phc: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    PasswordHash::new(phc)
        .is_ok_and(|hash| argon2::Argon2::default().verify_password(password.as_bytes(), &hash).is_ok())
}

/// A password: 10 to 128 characters (NIST 800-63B's floor is 8; payments ask more).
pub fn check_password(password: &str) -> Result<(), ApiError> {
    let length = password.chars().count();
    if (10..=128).contains(&length) { Ok(()) } else { Err(ApiError::invalid("password must be 10 to 128 characters")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_role_has_the_duties_of_the_table() {
        let table = [
            (StaffRole::Admin, [true, true, true, true]),
            (StaffRole::Support, [true, true, false, false]),
            (StaffRole::Finance, [true, false, true, false]),
        ];
        for (role, allowed) in table {
            let duties = [Duty::Read, Duty::Support, Duty::Finance, Duty::Administer];
            assert_eq!(duties.map(|duty| duty.allows(role)), allowed, "{role:?}");
        }
    }

    #[test]
    fn a_password_hash_verifies_only_its_password() {
        let hash = hash_password("correct horse battery").unwrap_or_default();
        assert!(hash.starts_with("$argon2id$"));
        assert!(password_matches("correct horse battery", &hash));
        assert!(!password_matches("correct horse battery!", &hash));
        assert!(!password_matches("x", "not a phc string"));
    }
}
