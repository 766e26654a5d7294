//! Keys, staff and the audit log: rolling a key with an overlap, restricted
//! (read-only) keys, the admin's revoke-all, a merchant's gateway key;
//! staff accounts and their sessions; the audit log, read-only.

use std::sync::Arc;

use axum::Json;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use platform::{Action, Actor, AuditEntry, AuditNumber, Outcome, PartyKind, PartyNumber, StaffRole, Target};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::events::Overlap;
use super::{ChangeErrors, IdempotencyKey, Page, ReadErrors, outcome_or_error};
use crate::app::AppState;
use crate::auth::{
    Caller, Duty, PresentedKey, RequestTag, always_audited, check_password, hash_key, hash_password, new_key,
    password_matches, password_work, rate_limited,
};
use crate::body::{ApiQuery, JsonBody};
use crate::clock::rfc3339;
use crate::error::ApiError;
use crate::ids::IdKind;

/// A new API key: derived from the request under the platform's secret when
/// it carries an `Idempotency-Key` (a retry shows the same key), else random.
fn fresh_key<T>(state: &AppState, caller: Caller, body: &JsonBody<T>) -> Result<String, ApiError> {
    match body.idempotency(caller) {
        Some(tag) => {
            let scope = tag.caller.get().to_le_bytes();
            let bytes = state.derive(b"rolled-api-key", &tag.request_hash, &[tag.key.as_bytes(), &scope].concat())?;
            Ok(format!("zk_{}", hex::encode(bytes)))
        }
        None => new_key("zk_"),
    }
}

#[derive(Serialize, ToSchema)]
pub struct NewKey {
    /// Shown once: only its hash is kept.
    pub api_key: String,
    /// `all` or `read`.
    pub permissions: String,
    /// When the key used to ask for this one stops working (a roll).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_key_expires_at: Option<String>,
}

#[utoipa::path(post, path = "/v1/api-keys/roll", tag = "access", request_body = Overlap,
    params(IdempotencyKey),
    responses((status = 201, body = NewKey), ChangeErrors),
    security(("api_key" = [])))]
pub async fn roll_key(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    presented: PresentedKey,
    request: RequestTag,
    body: JsonBody<Overlap>,
) -> Result<(StatusCode, Json<NewKey>), ApiError> {
    let party = match caller {
        Caller::Party { number, .. } => number,
        _ => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "operators' credentials are not rolled here: the admin key is set by --admin-key, staff sign in",
            ));
        }
    };
    let old_expires_at = body.value.expires_at(state.clock.now())?;
    let api_key = fresh_key(&state, caller, &body)?;
    let read_only = state.store.read(|p| p.key_grant(&presented.0).is_some_and(|grant| grant.read_only));
    let action = Action::RollKey { party, old_key_hash: presented.0, new_key_hash: hash_key(&api_key), old_expires_at };
    let action = always_audited(caller, &request, "api_key.roll", Target::Party(party), action);
    let outcome = state.submit(body.idempotency(caller), action).await?;
    outcome_or_error!(outcome, Outcome::KeysChanged => ())?;
    let permissions = if read_only { "read" } else { "all" }.to_string();
    Ok((
        StatusCode::CREATED,
        Json(NewKey { api_key, permissions, previous_key_expires_at: Some(rfc3339(old_expires_at)) }),
    ))
}

#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyRequest {
    /// `read`: the key may only make GET requests.
    #[schema(pattern = "^read$")]
    pub permissions: String,
}

#[utoipa::path(post, path = "/v1/api-keys", tag = "access", request_body = KeyRequest,
    params(IdempotencyKey),
    responses((status = 201, body = NewKey), ChangeErrors),
    security(("api_key" = [])))]
pub async fn create_key(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    request: RequestTag,
    body: JsonBody<KeyRequest>,
) -> Result<(StatusCode, Json<NewKey>), ApiError> {
    let party = caller.require_party(&[PartyKind::User, PartyKind::Merchant])?;
    if body.value.permissions != "read" {
        return Err(ApiError::invalid("permissions must be \"read\" (a full key is rolled: POST /v1/api-keys/roll)"));
    }
    let api_key = fresh_key(&state, caller, &body)?;
    let action = Action::AddKey { party, key_hash: hash_key(&api_key), read_only: true };
    let action = always_audited(caller, &request, "api_key.create_restricted", Target::Party(party), action);
    let outcome = state.submit(body.idempotency(caller), action).await?;
    outcome_or_error!(outcome, Outcome::KeysChanged => ())?;
    Ok((StatusCode::CREATED, Json(NewKey { api_key, permissions: "read".to_string(), previous_key_expires_at: None })))
}

#[derive(Serialize, ToSchema)]
pub struct RevokedKeys {
    /// The party (`usr_…` or `mch_…`).
    pub id: String,
    /// Its one key now, shown once.
    pub api_key: String,
}

#[utoipa::path(post, path = "/v1/admin/parties/{id}/revoke-keys", tag = "access",
    params(("id" = String, Path, description = "usr_… or mch_…"), IdempotencyKey),
    responses((status = 200, body = RevokedKeys), ChangeErrors),
    security(("api_key" = [])))]
pub async fn revoke_keys(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    request: RequestTag,
    Path(id): Path<String>,
    body: JsonBody<super::trades::EmptyBody>,
) -> Result<Json<RevokedKeys>, ApiError> {
    caller.require_admin()?;
    let (party, _) = state.ids.parse_party(&id).ok_or_else(|| ApiError::not_found("party"))?;
    let api_key = fresh_key(&state, caller, &body)?;
    let action = Action::RevokeKeys { party, new_key_hash: hash_key(&api_key) };
    let action = always_audited(caller, &request, "api_key.revoke_all", Target::Party(party), action);
    let outcome = state.submit(body.idempotency(caller), action).await?;
    outcome_or_error!(outcome, Outcome::KeysChanged => ())?;
    Ok(Json(RevokedKeys { id, api_key }))
}

#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AppPublicKey {
    /// PEM, RSA 2048: the key the merchant's gateway requests are signed with.
    #[schema(min_length = 1, max_length = 8192)]
    pub app_public_key: String,
}

#[derive(Serialize, ToSchema)]
pub struct AppKeySet {
    pub app_id: String,
}

#[utoipa::path(put, path = "/v1/merchants/me/app-public-key", tag = "access", request_body = AppPublicKey,
    responses((status = 200, body = AppKeySet), ChangeErrors),
    security(("api_key" = [])))]
pub async fn set_app_public_key(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    request: RequestTag,
    body: JsonBody<AppPublicKey>,
) -> Result<Json<AppKeySet>, ApiError> {
    let merchant = caller.require_party(&[PartyKind::Merchant])?;
    let pem = body.value.app_public_key.trim().to_string();
    crate::gateway::parse_public_key(&pem).map_err(|why| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_key",
            format!("app_public_key is not a usable RSA public key: {why}"),
        )
    })?;
    let action = Action::SetAppPublicKey { merchant, app_public_key: pem };
    let action = always_audited(caller, &request, "app_public_key.set", Target::Party(merchant), action);
    let outcome = state.submit(None, action).await?;
    outcome_or_error!(outcome, Outcome::KeysChanged => ())?;
    Ok(Json(AppKeySet { app_id: crate::gateway::app_id(merchant) }))
}

#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewStaff {
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9._@-]+$")]
    pub login: String,
    #[schema(min_length = 10, max_length = 128)]
    pub password: String,
    /// `admin`, `support` or `finance`.
    #[schema(pattern = "^(admin|support|finance)$")]
    pub role: String,
}

#[derive(Serialize, ToSchema)]
pub struct StaffView {
    /// `stf_…`
    pub id: String,
    pub login: String,
    pub role: String,
    pub created: String,
}

pub fn role_name(role: StaffRole) -> &'static str {
    match role {
        StaffRole::Admin => "admin",
        StaffRole::Support => "support",
        StaffRole::Finance => "finance",
    }
}

fn staff_view(state: &AppState, staff: &platform::Staff) -> StaffView {
    StaffView {
        id: state.ids.format(IdKind::Staff, staff.number),
        login: staff.login.clone(),
        role: role_name(staff.role).to_string(),
        created: rfc3339(staff.created_at),
    }
}

#[utoipa::path(post, path = "/v1/admin/staff", tag = "access", request_body = NewStaff,
    params(IdempotencyKey),
    responses((status = 201, body = StaffView), ChangeErrors),
    security(("api_key" = [])))]
pub async fn create_staff(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    request: RequestTag,
    body: JsonBody<NewStaff>,
) -> Result<(StatusCode, Json<StaffView>), ApiError> {
    caller.require_admin()?;
    let value = &body.value;
    let role = match value.role.as_str() {
        "admin" => StaffRole::Admin,
        "support" => StaffRole::Support,
        "finance" => StaffRole::Finance,
        _ => return Err(ApiError::invalid("role must be admin, support or finance")),
    };
    if !platform::access::is_login(&value.login) {
        return Err(ApiError::invalid("login must be 1 to 64 letters, digits, '.', '_', '-' or '@'"));
    }
    check_password(&value.password)?;
    let password = value.password.clone();
    // Argon2id takes tens of milliseconds of CPU: not on the async workers.
    let password_hash = password_work(&state, move || hash_password(&password)).await??;
    let action = Action::CreateStaff { login: value.login.clone(), password_hash, role };
    let action = always_audited(caller, &request, "staff.create", Target::None, action);
    let outcome = state.submit(body.idempotency(caller), action).await?;
    let number = outcome_or_error!(outcome, Outcome::StaffCreated { number } => number)?;
    let staff = state.store.read(|p| p.staff(number).cloned()).ok_or_else(|| ApiError::internal("staff not kept"))?;
    Ok((StatusCode::CREATED, Json(staff_view(&state, &staff))))
}

#[derive(Serialize, ToSchema)]
pub struct StaffPage {
    pub data: Vec<StaffView>,
    pub has_more: bool,
}

#[utoipa::path(get, path = "/v1/admin/staff", tag = "access",
    responses((status = 200, body = StaffPage), ReadErrors),
    security(("api_key" = [])))]
pub async fn list_staff(State(state): State<Arc<AppState>>, caller: Caller) -> Result<Json<StaffPage>, ApiError> {
    caller.require_admin()?;
    let data = state.store.read(|p| p.staff_list().take(1_000).map(|staff| staff_view(&state, staff)).collect());
    Ok(Json(StaffPage { data, has_more: false }))
}

#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignIn {
    #[schema(min_length = 1, max_length = 64)]
    pub login: String,
    #[schema(min_length = 1, max_length = 128)]
    pub password: String,
}

#[derive(Serialize, ToSchema)]
pub struct Session {
    /// A bearer token for the API (`Authorization: Bearer zst_…`).
    pub token: String,
    pub expires_at: String,
    pub staff: StaffView,
}

#[utoipa::path(post, path = "/v1/staff/sessions", tag = "access", request_body = SignIn,
    responses((status = 201, body = Session), ChangeErrors))]
pub async fn sign_in(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    body: JsonBody<SignIn>,
) -> Result<(StatusCode, Json<Session>), ApiError> {
    let SignIn { login, password } = &body.value;
    if login.chars().count() > platform::access::LOGIN_CHARS_MAX || password.chars().count() > 128 {
        return Err(ApiError::unauthorized());
    }
    if !state.limiters.allow_sign_in(login) {
        return Err(rate_limited("too many sign-ins to this login: wait a minute"));
    }
    let staff = state.store.read(|p| p.staff_by_login(login).cloned());
    // Unknown logins cost the same as known ones (no way to tell them apart by time).
    let phc = staff.as_ref().map(|staff| staff.password_hash.clone());
    let password = password.clone();
    let matches =
        password_work(&state, move || password_matches(&password, phc.as_deref().unwrap_or(crate::auth::decoy_hash())))
            .await?;
    let Some(staff) = staff.filter(|_| matches) else {
        // Failing too often from one address is answered as a rate limit, as a wrong key is.
        if !state.limiters.allow_failure(peer.ip()) {
            return Err(rate_limited("too many failed sign-ins from this address"));
        }
        return Err(ApiError::unauthorized());
    };
    let (token, expires_at) = state.sessions.open(&state, &staff, state.clock.now())?;
    Ok((
        StatusCode::CREATED,
        Json(Session { token, expires_at: rfc3339(expires_at), staff: staff_view(&state, &staff) }),
    ))
}

#[utoipa::path(delete, path = "/v1/staff/sessions/current", tag = "access",
    responses((status = 200, body = super::events::Deleted), ReadErrors),
    security(("api_key" = [])))]
pub async fn sign_out(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    headers: axum::http::HeaderMap,
) -> Result<Json<super::events::Deleted>, ApiError> {
    let Caller::Staff { number, .. } = caller else { return Err(ApiError::forbidden()) };
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .unwrap_or_default()
        .trim()
        .to_string();
    let now = state.clock.now();
    state.sessions.end(&token, now.plus_nanos(crate::auth::SESSION_NANOS), now);
    Ok(Json(super::events::Deleted { id: state.ids.format(IdKind::Staff, number), deleted: true }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    #[param(pattern = "^aud_[0-9a-f]{32}$")]
    pub starting_after: Option<String>,
    /// `admin_key`, a staff id (`stf_…`) or a party id.
    pub actor: Option<String>,
    /// The id of what was acted on (`usr_…`, `mch_…`, `trd_…`, `stf_…`, `we_…`, `evt_…`, `cmp_…`) or a name.
    pub target: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct AuditView {
    /// `aud_…`
    pub id: String,
    pub at: String,
    /// `admin_key`, `stf_…`, `usr_…` or `mch_…`.
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub request_id: String,
    /// `ok`, or the error code the action was refused with.
    pub outcome: String,
}

#[derive(Serialize, ToSchema)]
pub struct AuditPage {
    pub data: Vec<AuditView>,
    pub has_more: bool,
}

pub fn actor_name(state: &AppState, actor: Actor) -> String {
    match actor {
        Actor::AdminKey => "admin_key".to_string(),
        Actor::Staff(number) => state.ids.format(IdKind::Staff, number),
        Actor::Party(number) => party_id(state, number),
    }
}

fn party_id(state: &AppState, number: PartyNumber) -> String {
    let kind = state.store.read(|p| p.party(number).map(|party| party.kind)).unwrap_or(PartyKind::User);
    state.ids.format(IdKind::of_party(kind), number)
}

pub fn target_name(state: &AppState, target: &Target) -> Option<String> {
    Some(match target {
        Target::None => return None,
        Target::Party(number) => party_id(state, *number),
        Target::Trade(number) => state.ids.format(IdKind::Trade, *number),
        Target::Staff(number) => state.ids.format(IdKind::Staff, *number),
        Target::Endpoint(number) => state.ids.format(IdKind::Endpoint, *number),
        Target::Event(number) => state.ids.format(IdKind::Event, *number),
        Target::Campaign(number) => state.ids.format(IdKind::Campaign, *number),
        Target::Named(name) => name.clone(),
    })
}

pub fn audit_view(state: &AppState, entry: &AuditEntry) -> AuditView {
    AuditView {
        id: state.ids.format(IdKind::Audit, entry.number),
        at: rfc3339(entry.at),
        actor: actor_name(state, entry.note.actor),
        action: entry.note.action.clone(),
        target: target_name(state, &entry.note.target),
        request_id: entry.note.request_id.clone(),
        outcome: match &entry.refused {
            None => "ok".to_string(),
            Some(rejection) => crate::error::ApiError::from(rejection.clone()).code.to_string(),
        },
    }
}

#[utoipa::path(get, path = "/v1/admin/audit", tag = "access", params(AuditParams),
    responses((status = 200, body = AuditPage), ReadErrors),
    security(("api_key" = [])))]
pub async fn audit(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(params): ApiQuery<AuditParams>,
) -> Result<Json<AuditPage>, ApiError> {
    caller.require(Duty::Read)?;
    let page = Page::from_params(params.limit, params.starting_after.as_deref(), &state.ids, IdKind::Audit)?;
    let reader = Arc::clone(&state);
    let (actor, target) = (params.actor.clone(), params.target.clone());
    let mut found = tokio::task::spawn_blocking(move || {
        let head = reader.store.read(|p| p.audit_head());
        let keep = |entry: &AuditEntry| {
            actor.as_ref().is_none_or(|actor| *actor == actor_name(&reader, entry.note.actor))
                && target
                    .as_ref()
                    .is_none_or(|target| Some(target) == target_name(&reader, &entry.note.target).as_ref())
        };
        let read = |offset| platform::read_archived_audit(reader.store.archive(), offset);
        platform::audit_lines(head, page.after.map(AuditNumber::new), page.limit + 1, keep, read)
    })
    .await
    .map_err(|_| ApiError::internal("the request was dropped"))?
    .map_err(|error| ApiError::internal(format!("cannot read the audit log: {error}")))?;
    let has_more = found.len() > page.limit;
    found.truncate(page.limit);
    Ok(Json(AuditPage { data: found.iter().map(|entry| audit_view(&state, entry)).collect(), has_more }))
}
