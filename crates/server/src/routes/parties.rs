//! Parties and what they hold: users, merchants, balances, statements.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use platform::accounts::{self, Reference};
use platform::{Action, Outcome, PartyKind, PartyNumber, Timestamp};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ChangeErrors, IdempotencyKey, Page, ReadErrors, id_of, outcome_or_error};
use crate::app::AppState;
use crate::auth::{Caller, RequestTag, audited, new_key};
use crate::body::{ApiQuery, JsonBody};
use crate::clock::rfc3339;
use crate::error::ApiError;
use crate::ids::{IdKind, PublicIds};

#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// 1 to 200 characters, not only spaces.
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    /// A login to sign in with (the cashier, the portal): 1 to 64 letters,
    /// digits, `.`, `_`, `-` or `@`; with `password`.
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9._@-]+$")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login: Option<String>,
    /// 10 to 128 characters; kept only as an Argon2id hash.
    #[schema(min_length = 10, max_length = 128)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMerchant {
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    /// The merchant's fee on settled trades, in basis points (default 60: 0.6%).
    #[serde(default, deserialize_with = "crate::body::whole_option")]
    #[schema(minimum = 0, maximum = 10_000)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fee_rate_bps: Option<u32>,
    /// Where notifications are POSTed (http or https).
    #[schema(max_length = 2048)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    /// For the Alipay-compatible gateway (`/gateway.do`): the merchant's RSA
    /// public key (PEM or bare base64, at least 2048 bits) that verifies its
    /// requests. The answer then carries `app_id` and `alipay_public_key`.
    #[schema(max_length = 4096)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_public_key: Option<String>,
    /// A login to sign in with (the cashier, the portal): 1 to 64 letters,
    /// digits, `.`, `_`, `-` or `@`; with `password`.
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9._@-]+$")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login: Option<String>,
    /// 10 to 128 characters; kept only as an Argon2id hash.
    #[schema(min_length = 10, max_length = 128)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct CreatedParty {
    pub id: String,
    pub name: String,
    /// Shown once: zhifu keeps only its hash.
    pub api_key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fee_rate_bps: Option<u32>,
    /// With `app_public_key`: the merchant's app id on the gateway.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
    /// With `app_public_key`: the platform's public key (PEM), which signs
    /// the gateway's answers and notifications.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alipay_public_key: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Balance {
    /// What the party can spend now, in fen (exact, however large).
    #[schema(value_type = u64)]
    pub available: u128,
    /// The party's money on its way but not yet gone, in fen: pending
    /// withdrawals and the unclaimed shares of its red packets. An escrow
    /// payment is not held: it has left the wallet (see a trade's `escrow_amount`).
    #[schema(value_type = u64)]
    pub held: u128,
    pub fund_value: u64,
    pub loan_outstanding: u64,
}

#[derive(Serialize, ToSchema)]
pub struct PartyView {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub created: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fee_rate_bps: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    pub balance: Balance,
}

#[derive(Serialize, ToSchema)]
pub struct StatementEntry {
    /// `ent_…`: the cursor for `starting_after`.
    pub id: String,
    /// `topup`, `transfer`, `transfer_fee`, `withdrawal`, `withdrawal_fee`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `credit` (money in) or `debit` (money out).
    pub direction: String,
    /// `posted`, `held` (pending), or `released` (a hold given back).
    pub phase: String,
    #[schema(value_type = u64)]
    pub amount: u128,
    /// The object the entry belongs to (`top_…`, `trf_…`, `wdr_…`).
    pub reference: String,
    pub created: String,
}

#[derive(Serialize, ToSchema)]
pub struct StatementPage {
    pub data: Vec<StatementEntry>,
    pub has_more: bool,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// An entry id: list the ones before it (older).
    #[param(pattern = "^ent_[0-9a-f]{32}$")]
    pub starting_after: Option<String>,
}

#[utoipa::path(post, path = "/v1/users", tag = "parties", request_body = NewUser,
    params(IdempotencyKey),
    responses((status = 201, body = CreatedParty), ChangeErrors),
    security(("api_key" = [])))]
pub async fn create_user(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    request: RequestTag,
    body: JsonBody<NewUser>,
) -> Result<(StatusCode, Json<CreatedParty>), ApiError> {
    caller.require_admin()?;
    let value = &body.value;
    let sign_in = sign_in_of(value.login.as_deref(), value.password.as_deref())?;
    let new = NewParty { kind: PartyKind::User, name: value.name.clone(), sign_in, ..NewParty::default() };
    create_party(&state, (caller, &request), &body, new).await
}

#[utoipa::path(post, path = "/v1/merchants", tag = "parties", request_body = NewMerchant,
    params(IdempotencyKey),
    responses((status = 201, body = CreatedParty), ChangeErrors),
    security(("api_key" = [])))]
pub async fn create_merchant(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    request: RequestTag,
    body: JsonBody<NewMerchant>,
) -> Result<(StatusCode, Json<CreatedParty>), ApiError> {
    caller.require_admin()?;
    if let Some(url) = &body.value.webhook_url {
        check_destination(&state, url, "webhook_url").await?;
    }
    let value = &body.value;
    let app_public_key = match &value.app_public_key {
        Some(text) => {
            // Well-formed JSON the schema accepts, yet not a key: unprocessable.
            crate::gateway::parse_public_key(text).map_err(|why| {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_key",
                    format!("app_public_key is not a usable RSA public key: {why}"),
                )
            })?;
            Some(text.trim().to_string())
        }
        None => None,
    };
    let new = NewParty {
        kind: PartyKind::Merchant,
        name: value.name.clone(),
        fee_rate_bps: value.fee_rate_bps,
        webhook_url: value.webhook_url.clone(),
        app_public_key,
        sign_in: sign_in_of(value.login.as_deref(), value.password.as_deref())?,
    };
    create_party(&state, (caller, &request), &body, new).await
}

/// A URL the platform may send to: http(s) with a host, and (on a server
/// listening beyond loopback) not a private or local address.
pub async fn check_destination(state: &AppState, url: &str, field: &str) -> Result<(), ApiError> {
    if !platform::text::is_web_url(url, URL_CHARS_MAX) {
        return Err(ApiError::invalid(format!(
            "{field} must be an http or https URL with a host, of at most 2048 characters"
        )));
    }
    state.destinations.check_url(url).await.map_err(|why| ApiError::invalid(format!("{field} cannot be used: {why}")))
}

/// The longest URL the platform sends to.
const URL_CHARS_MAX: usize = 2_048;

/// What the admin asked for in a new party.
struct NewParty {
    kind: PartyKind,
    name: String,
    fee_rate_bps: Option<u32>,
    webhook_url: Option<String>,
    app_public_key: Option<String>,
    /// A login and password to sign in with.
    sign_in: Option<(String, String)>,
}

/// A login and password given together, or neither.
fn sign_in_of(login: Option<&str>, password: Option<&str>) -> Result<Option<(String, String)>, ApiError> {
    match (login, password) {
        (None, None) => Ok(None),
        (Some(login), Some(password)) => {
            if !platform::access::is_login(login) {
                return Err(ApiError::invalid("login must be 1 to 64 letters, digits, '.', '_', '-' or '@'"));
            }
            crate::auth::check_password(password)?;
            Ok(Some((login.to_string(), password.to_string())))
        }
        // Each is valid alone by the schema: unprocessable together, as a key that does not parse.
        _ => Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", "login and password go together")),
    }
}

impl Default for NewParty {
    fn default() -> NewParty {
        NewParty {
            kind: PartyKind::User,
            name: String::new(),
            fee_rate_bps: None,
            webhook_url: None,
            app_public_key: None,
            sign_in: None,
        }
    }
}

async fn create_party<T>(
    state: &Arc<AppState>,
    (caller, request): (Caller, &RequestTag),
    body: &JsonBody<T>,
    new: NewParty,
) -> Result<(StatusCode, Json<CreatedParty>), ApiError> {
    let NewParty { kind, name, fee_rate_bps, webhook_url, app_public_key, sign_in } = new;
    let alipay_public_key = match app_public_key {
        // Making the platform's key (the first time) takes a moment: not on the async workers.
        Some(_) => {
            let keys = Arc::clone(state);
            let pem = tokio::task::spawn_blocking(move || keys.gateway_key().map(|key| key.public_pem().to_string()))
                .await
                .map_err(|error| ApiError::internal(format!("the gateway key: {error}")))?;
            Some(pem.map_err(|error| ApiError::internal(format!("the gateway key: {error}")))?)
        }
        None => None,
    };
    // A retried request must answer with the same key, yet zhifu keeps only
    // key hashes: with an Idempotency-Key, the key is derived from the
    // request under the server's own secret, so the replay derives it again.
    let api_key = match body.idempotency(caller) {
        Some(tag) => format!("zk_{}", hex::encode(state.derive(b"api-key", &tag.request_hash, tag.key.as_bytes())?)),
        None => new_key("zk_")?,
    };
    let webhook_secret = match kind {
        PartyKind::Merchant => {
            Some(format!("whsec_{}", &hex::encode(state.derive(b"webhook-secret", api_key.as_bytes(), b"")?)[..48]))
        }
        PartyKind::User => None,
    };
    let action = Action::CreateParty {
        kind,
        name: name.clone(),
        key_hash: crate::auth::hash_key(&api_key),
        fee_rate_bps,
        webhook_url,
        webhook_secret: webhook_secret.clone().unwrap_or_default(),
        app_public_key,
    };
    let action = match sign_in {
        Some((login, password)) => {
            let password_hash =
                crate::auth::password_work(state, move || crate::auth::hash_password(&password)).await??;
            Action::WithLogin { login, password_hash, action: Box::new(action) }
        }
        None => action,
    };
    let what = if kind == PartyKind::User { "user.create" } else { "merchant.create" };
    let action = audited(caller, request, what, platform::Target::None, action);
    let outcome = state.submit(body.idempotency(caller), action).await?;
    let number = outcome_or_error!(outcome, Outcome::PartyCreated { number, .. } => number)?;
    let fee_rate_bps = state.store.read(|p| p.party(number).map(|party| party.fee_rate_bps));
    Ok((
        StatusCode::CREATED,
        Json(CreatedParty {
            id: state.ids.format(IdKind::of_party(kind), number),
            name,
            api_key,
            webhook_secret,
            fee_rate_bps: if kind == PartyKind::Merchant { fee_rate_bps } else { None },
            app_id: alipay_public_key.as_ref().map(|_| crate::gateway::app_id(number)),
            alipay_public_key,
        }),
    ))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BalanceParams {
    /// RFC 3339: the balance as it was then. `available` is then the
    /// wallet's posted balance at that time, `fund_value` the Yu'e Bao
    /// holding's; `held` and `loan_outstanding` are not kept for the past
    /// and read 0.
    #[param(format = DateTime)]
    pub at: Option<String>,
}

#[utoipa::path(get, path = "/v1/balance", tag = "parties", params(BalanceParams),
    responses((status = 200, body = Balance), ReadErrors),
    security(("api_key" = [])))]
pub async fn balance(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(params): ApiQuery<BalanceParams>,
) -> Result<Json<Balance>, ApiError> {
    let number = caller.require_party(&[PartyKind::User, PartyKind::Merchant])?;
    let Some(at) = params.at else { return Ok(Json(balance_of(&state, number)?)) };
    let at =
        crate::clock::parse_rfc3339_clamped(&at).ok_or_else(|| ApiError::invalid("at must be an RFC 3339 time"))?;
    let reader = Arc::clone(&state);
    let (available, fund_value) = tokio::task::spawn_blocking(move || {
        let wallet = super::finance::balance_at(&reader, accounts::wallet(number), at)?;
        let fund = super::finance::balance_at(&reader, accounts::fund(number), at)?;
        Ok::<_, ApiError>((wallet, fund))
    })
    .await
    .map_err(|_| ApiError::internal("the request was dropped"))??;
    Ok(Json(Balance {
        available,
        held: 0,
        fund_value: u64::try_from(fund_value).unwrap_or(u64::MAX),
        loan_outstanding: 0,
    }))
}

fn balance_of(state: &AppState, number: PartyNumber) -> Result<Balance, ApiError> {
    let (balance, fund) = state.store.read(|p| (p.balance(number), p.fund_position(number)));
    let balance = balance.ok_or_else(|| ApiError::not_found("party"))?;
    let loan_outstanding = state.store.read(|p| p.loans_owed(number));
    Ok(Balance {
        available: balance.available,
        held: balance.held,
        fund_value: fund.value.get(),
        loan_outstanding: loan_outstanding.get(),
    })
}

#[utoipa::path(get, path = "/v1/users/{id}", tag = "parties", params(("id" = String, Path, description = "usr_…")),
    responses((status = 200, body = PartyView), ReadErrors),
    security(("api_key" = [])))]
pub async fn get_user(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<PartyView>, ApiError> {
    get_party(&state, caller, &id, PartyKind::User)
}

#[utoipa::path(get, path = "/v1/merchants/{id}", tag = "parties", params(("id" = String, Path, description = "mch_…")),
    responses((status = 200, body = PartyView), ReadErrors),
    security(("api_key" = [])))]
pub async fn get_merchant(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<PartyView>, ApiError> {
    get_party(&state, caller, &id, PartyKind::Merchant)
}

fn get_party(state: &AppState, caller: Caller, id: &str, kind: PartyKind) -> Result<Json<PartyView>, ApiError> {
    caller.require(crate::auth::Duty::Read)?;
    let number = PartyNumber::new(id_of(&state.ids, IdKind::of_party(kind), id, "party")?);
    let party = state.store.read(|p| p.party(number).filter(|party| party.kind == kind).cloned());
    let party = party.ok_or_else(|| ApiError::not_found("party"))?;
    Ok(Json(PartyView {
        id: state.ids.format(IdKind::of_party(kind), party.number),
        kind: if kind == PartyKind::User { "user" } else { "merchant" }.to_string(),
        name: party.name,
        created: rfc3339(party.created_at),
        fee_rate_bps: (kind == PartyKind::Merchant).then_some(party.fee_rate_bps),
        webhook_url: state.store.read(|p| p.endpoints_of(number).next().map(|endpoint| endpoint.url.clone())),
        balance: balance_of(state, number)?,
    }))
}

#[utoipa::path(get, path = "/v1/statement", tag = "parties", params(ListParams),
    responses((status = 200, body = StatementPage), ReadErrors),
    security(("api_key" = [])))]
pub async fn statement(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Json<StatementPage>, ApiError> {
    let number = caller.require_party(&[PartyKind::User, PartyKind::Merchant])?;
    let page = Page::from_params(params.limit, params.starting_after.as_deref(), &state.ids, IdKind::Entry)?;
    let wallet = accounts::wallet(number);
    let reader = Arc::clone(&state);
    let found = tokio::task::spawn_blocking(move || reader.store.account_history(wallet, page.after, page.limit + 1))
        .await
        .map_err(|_| ApiError::internal("the request was dropped"))?
        .map_err(|error| ApiError::internal(format!("cannot read the history: {error}")))?;
    let has_more = found.len() > page.limit;
    let data = found
        .into_iter()
        .take(page.limit)
        .map(|(position, transfer)| entry(&state.ids, wallet, position, &transfer))
        .collect();
    Ok(Json(StatementPage { data, has_more }))
}

/// The public id of what a ledger transfer belongs to.
pub(crate) fn reference_id(ids: &PublicIds, reference: Reference) -> String {
    let (kind, number) = match reference {
        Reference::TopUp(number) => (IdKind::TopUp, number),
        Reference::Transfer(number) => (IdKind::Transfer, number),
        Reference::Withdrawal(number) => (IdKind::Withdrawal, number),
        Reference::Trade(number) => (IdKind::Trade, number.get()),
        Reference::Fund(number) => (IdKind::FundOrder, number),
        Reference::Campaign(number) => (IdKind::Campaign, number.get()),
        Reference::RedPacket(number) => (IdKind::RedPacket, number.get()),
        Reference::Loan(number) => (IdKind::Loan, number.get()),
        Reference::Freeze(number) => (IdKind::Freeze, number),
    };
    ids.format(kind, number)
}

fn entry(ids: &PublicIds, wallet: u128, position: u64, transfer: &ledger::Transfer) -> StatementEntry {
    use ledger::TransferFlags;
    let phase = if transfer.flags.contains(TransferFlags::PENDING) {
        "held"
    } else if transfer.flags.contains(TransferFlags::VOID_PENDING) {
        "released"
    } else {
        "posted"
    };
    StatementEntry {
        id: ids.format(IdKind::Entry, position),
        kind: accounts::transfer_code_name(transfer.code).to_string(),
        direction: if transfer.credit_account_id == wallet { "credit" } else { "debit" }.to_string(),
        phase: phase.to_string(),
        amount: transfer.amount,
        reference: Reference::decode(transfer.user_data)
            .map(|reference| reference_id(ids, reference))
            .unwrap_or_default(),
        created: rfc3339(Timestamp::from_nanos(transfer.timestamp)),
    }
}
