//! Pre-authorisation over REST (`platform::freezes`): a merchant freezes
//! part of a buyer's balance by the buyer's payment code, releases part or
//! all of it, and pays trades from it. The gateway's
//! `alipay.fund.auth.order.*` and `alipay.trade.pay` with `auth_no` are the
//! same actions (`gateway::preauth`).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use platform::freezes::Freeze;
use platform::{Action, NewTrade, Outcome, PartyKind};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::trades::{TradeView, trade_view};
use super::{ChangeErrors, IdempotencyKey, Page, ReadErrors, id_of, outcome_or_error};
use crate::app::AppState;
use crate::auth::Caller;
use crate::body::{ApiQuery, JsonBody, check_amount};
use crate::clock::rfc3339;
use crate::error::ApiError;
use crate::ids::IdKind;

#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewFreeze {
    /// The buyer's payment code (`POST /v1/payment-codes`), scanned by the merchant.
    #[schema(min_length = 18, max_length = 18, pattern = "^[0-9]{18}$")]
    pub payment_code: String,
    /// The merchant's order: one freeze per order; a retry returns it.
    #[schema(min_length = 1, max_length = 64, pattern = "^[!-~]+$")]
    pub out_order_no: String,
    #[schema(min_length = 1, max_length = 64, pattern = "^[!-~]+$")]
    pub out_request_no: String,
    #[serde(deserialize_with = "crate::body::whole")]
    #[schema(minimum = 1, maximum = 1_000_000_000_000_000_i64)]
    pub amount: u64,
    #[schema(min_length = 1, max_length = 256)]
    pub title: String,
}

#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UnfreezeBody {
    /// Unique per freeze; a retry with the same amount is answered again.
    #[schema(min_length = 1, max_length = 64, pattern = "^[!-~]+$")]
    pub out_request_no: String,
    #[serde(deserialize_with = "crate::body::whole")]
    #[schema(minimum = 1, maximum = 1_000_000_000_000_000_i64)]
    pub amount: u64,
}

#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FreezePayBody {
    /// The new trade's reference; a retry returns the trade.
    #[schema(min_length = 1, max_length = 64, pattern = "^[!-~]+$")]
    pub out_trade_no: String,
    #[serde(deserialize_with = "crate::body::whole")]
    #[schema(minimum = 1, maximum = 1_000_000_000_000_000_i64)]
    pub amount: u64,
    #[schema(min_length = 1, max_length = 256)]
    pub subject: String,
    /// Release what the freeze still holds after this payment (Alipay's `COMPLETE`).
    #[serde(default)]
    pub complete: bool,
}

#[derive(Serialize, ToSchema)]
pub struct FreezeOperationView {
    /// `fop_…` (Alipay's `operation_id`).
    pub id: String,
    /// `FREEZE`, `UNFREEZE` or `PAY`.
    #[serde(rename = "type")]
    pub kind: String,
    pub out_request_no: String,
    pub amount: u64,
    pub created: String,
    /// A payment's trade.
    pub trade_no: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct FreezeView {
    /// `frz_…` (Alipay's `auth_no`).
    pub id: String,
    pub out_order_no: String,
    pub title: String,
    /// `AUTHORIZED`, `FINISH` (all paid or released) or `CLOSED` (expired).
    pub status: String,
    pub merchant: String,
    pub payer: String,
    pub frozen: u64,
    /// Still held.
    pub rest: u64,
    pub paid: u64,
    pub released: u64,
    pub created: String,
    /// When what is left goes back by itself: 30 days after the freeze.
    pub expires_at: String,
    pub operations: Vec<FreezeOperationView>,
}

pub fn freeze_view(state: &AppState, freeze: &Freeze) -> FreezeView {
    let ids = &state.ids;
    FreezeView {
        id: ids.format(IdKind::Freeze, freeze.number),
        out_order_no: freeze.out_order_no.clone(),
        title: freeze.title.clone(),
        status: freeze.status.name().to_string(),
        merchant: ids.format(IdKind::Merchant, freeze.merchant),
        payer: ids.format(IdKind::User, freeze.payer),
        frozen: freeze.frozen.get(),
        rest: freeze.rest.get(),
        paid: freeze.paid.get(),
        released: freeze.released.get(),
        created: rfc3339(freeze.created_at),
        expires_at: rfc3339(freeze.expires_at),
        operations: freeze
            .operations
            .iter()
            .map(|op| FreezeOperationView {
                id: ids.format(IdKind::FreezeOperation, op.number),
                kind: op.kind.name().to_string(),
                out_request_no: op.out_request_no.clone(),
                amount: op.amount.get(),
                created: rfc3339(op.at),
                trade_no: op.trade.map(|trade| ids.format(IdKind::Trade, trade)),
            })
            .collect(),
    }
}

/// The freeze `id` names, if `caller` may see it (its merchant, its payer, operators).
pub fn visible_freeze(state: &AppState, caller: Caller, id: &str) -> Result<Freeze, ApiError> {
    let number = id_of(&state.ids, IdKind::Freeze, id, "freeze")?;
    let may_see = |freeze: &Freeze| match caller {
        Caller::Party { number, .. } => number == freeze.merchant || number == freeze.payer,
        _ => true,
    };
    state.store.read(|p| p.freeze(number).cloned()).filter(may_see).ok_or_else(|| ApiError::not_found("freeze"))
}

fn freeze_of(outcome: Outcome) -> Result<Box<Freeze>, ApiError> {
    outcome_or_error!(outcome, Outcome::FreezeUpdated(freeze) => freeze)
}

#[utoipa::path(post, path = "/v1/freezes", tag = "freezes", request_body = NewFreeze,
    params(IdempotencyKey),
    responses((status = 201, body = FreezeView), ChangeErrors),
    security(("api_key" = [])))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    body: JsonBody<NewFreeze>,
) -> Result<(StatusCode, Json<FreezeView>), ApiError> {
    let merchant = caller.require_party(&[PartyKind::Merchant])?;
    let value = &body.value;
    let action = Action::CreateFreeze {
        merchant,
        code: value.payment_code.clone(),
        out_order_no: value.out_order_no.clone(),
        out_request_no: value.out_request_no.clone(),
        amount: check_amount(value.amount)?,
        title: value.title.clone(),
    };
    let freeze = freeze_of(state.submit(body.idempotency(caller), action).await?)?;
    Ok((StatusCode::CREATED, Json(freeze_view(&state, &freeze))))
}

#[utoipa::path(get, path = "/v1/freezes/{id}", tag = "freezes", params(("id" = String, Path, description = "frz_…")),
    responses((status = 200, body = FreezeView), ReadErrors),
    security(("api_key" = [])))]
pub async fn get(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<FreezeView>, ApiError> {
    visible_freeze(&state, caller, &id).map(|freeze| Json(freeze_view(&state, &freeze)))
}

/// The freeze a merchant's change is on (roles before the lookup).
fn merchants_freeze(state: &AppState, caller: Caller, id: &str) -> Result<(platform::PartyNumber, u64), ApiError> {
    let merchant = caller.require_party(&[PartyKind::Merchant])?;
    let number = id_of(&state.ids, IdKind::Freeze, id, "freeze")?;
    Ok((merchant, number))
}

#[utoipa::path(post, path = "/v1/freezes/{id}/unfreeze", tag = "freezes", request_body = UnfreezeBody,
    params(("id" = String, Path, description = "frz_…"), IdempotencyKey),
    responses((status = 200, body = FreezeView), ChangeErrors),
    security(("api_key" = [])))]
pub async fn unfreeze(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    body: JsonBody<UnfreezeBody>,
) -> Result<Json<FreezeView>, ApiError> {
    let (merchant, freeze) = merchants_freeze(&state, caller, &id)?;
    let value = &body.value;
    let amount = check_amount(value.amount)?;
    let action = Action::Unfreeze { freeze, merchant, out_request_no: value.out_request_no.clone(), amount };
    let freeze = freeze_of(state.submit(body.idempotency(caller), action).await?)?;
    Ok(Json(freeze_view(&state, &freeze)))
}

/// A payment from a freeze, for REST and the gateway alike.
pub async fn pay(
    state: &Arc<AppState>,
    idempotency: Option<platform::IdempotencyTag>,
    freeze: u64,
    trade: NewTrade,
    complete: bool,
) -> Result<Outcome, ApiError> {
    let merchant = trade.merchant;
    state.submit(idempotency, Action::PayFromFreeze { freeze, merchant, trade, complete }).await
}

#[utoipa::path(post, path = "/v1/freezes/{id}/pay", tag = "freezes", request_body = FreezePayBody,
    params(("id" = String, Path, description = "frz_…"), IdempotencyKey),
    responses((status = 201, body = TradeView), ChangeErrors),
    security(("api_key" = [])))]
pub async fn pay_from(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    body: JsonBody<FreezePayBody>,
) -> Result<(StatusCode, Json<TradeView>), ApiError> {
    let (merchant, freeze) = merchants_freeze(&state, caller, &id)?;
    let value = &body.value;
    let amount = check_amount(value.amount)?;
    let trade = NewTrade::instant(merchant, value.out_trade_no.clone(), amount, value.subject.clone());
    let outcome = pay(&state, body.idempotency(caller), freeze, trade, value.complete).await?;
    let trade = outcome_or_error!(outcome, Outcome::TradeUpdated(trade) => trade)?;
    if trade.paid_at.is_none() {
        return Err(ApiError::conflict("the trade was not paid"));
    }
    Ok((StatusCode::CREATED, Json(trade_view(&state.ids, &trade))))
}

#[derive(Serialize, ToSchema)]
pub struct FreezePage {
    pub data: Vec<FreezeView>,
    pub has_more: bool,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FreezeParams {
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// A freeze's id: the page continues after it (older ones).
    #[param(pattern = "^frz_[0-9a-f]{32}$")]
    pub starting_after: Option<String>,
    /// Operators: whose freezes (`mch_…`).
    #[param(pattern = "^mch_[0-9a-f]{32}$")]
    pub merchant: Option<String>,
}

/// `GET /v1/freezes`: a merchant's freezes, newest first (operators name the merchant).
#[utoipa::path(get, path = "/v1/freezes", tag = "freezes", params(FreezeParams),
    responses((status = 200, body = FreezePage),
        (status = 422, description = "`invalid_request`: an operator did not name the merchant", body = crate::error::ErrorBody),
        ReadErrors),
    security(("api_key" = [])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(params): ApiQuery<FreezeParams>,
) -> Result<Json<FreezePage>, ApiError> {
    let merchant = match (caller, params.merchant.as_deref()) {
        (Caller::Party { number, kind: PartyKind::Merchant }, None) => number,
        (Caller::Party { .. }, _) => return Err(ApiError::forbidden()),
        (_, merchant) => {
            caller.require(crate::auth::Duty::Read)?;
            let id = merchant.ok_or_else(|| {
                ApiError::new(
                    axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_request",
                    "operators name the merchant (merchant=mch_…)",
                )
            })?;
            platform::PartyNumber::new(id_of(&state.ids, IdKind::Merchant, id, "merchant")?)
        }
    };
    let Page { limit, after: before } =
        Page::from_params(params.limit, params.starting_after.as_deref(), &state.ids, IdKind::Freeze)?;
    let mut found: Vec<Freeze> =
        state.store.read(|p| p.freezes_of(merchant, before).take(limit + 1).cloned().collect());
    let has_more = found.len() > limit;
    found.truncate(limit);
    Ok(Json(FreezePage { data: found.iter().map(|freeze| freeze_view(&state, freeze)).collect(), has_more }))
}
