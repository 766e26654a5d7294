//! Money in, money out, person to person.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use platform::{Action, Outcome, PartyKind};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ChangeErrors, IdempotencyKey, ReadErrors, id_of, outcome_or_error};
use crate::app::AppState;
use crate::auth::Caller;
use crate::body::{JsonBody, check_amount};
use crate::error::ApiError;
use crate::ids::IdKind;

#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTopUp {
    /// In fen, 1 to 10^15.
    #[serde(deserialize_with = "crate::body::whole")]
    #[schema(minimum = 1, maximum = 1_000_000_000_000_000_i64)]
    pub amount: u64,
    /// The paying bank, such as `ICBC`.
    #[schema(min_length = 1, max_length = 32)]
    pub bank: String,
}

#[derive(Serialize, ToSchema)]
pub struct TopUp {
    pub id: String,
    pub amount: u64,
    /// Always `succeeded`: top-ups arrive at once.
    pub status: String,
}

#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWithdrawal {
    #[serde(deserialize_with = "crate::body::whole")]
    #[schema(minimum = 1, maximum = 1_000_000_000_000_000_i64)]
    pub amount: u64,
}

#[derive(Serialize, ToSchema)]
pub struct WithdrawalView {
    pub id: String,
    pub amount: u64,
    pub fee: u64,
    /// `pending`, then `succeeded` or `failed` (money and fee returned).
    pub status: String,
}

#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTransfer {
    /// A user or merchant id.
    #[schema(pattern = "^(usr|mch)_[0-9a-f]{32}$")]
    pub to: String,
    #[serde(deserialize_with = "crate::body::whole")]
    #[schema(minimum = 1, maximum = 1_000_000_000_000_000_i64)]
    pub amount: u64,
    /// At most 200 bytes.
    #[schema(max_length = 200)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memo: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct TransferView {
    pub id: String,
    pub amount: u64,
    pub fee: u64,
}

#[utoipa::path(post, path = "/v1/topups", tag = "money", request_body = NewTopUp,
    params(IdempotencyKey),
    responses((status = 201, body = TopUp), ChangeErrors),
    security(("api_key" = [])))]
pub async fn create_topup(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    body: JsonBody<NewTopUp>,
) -> Result<(StatusCode, Json<TopUp>), ApiError> {
    let party = caller.require_party(&[PartyKind::User])?;
    let amount = check_amount(body.value.amount)?;
    let bank = body.value.bank.clone();
    let outcome = state.submit(body.idempotency(caller), Action::TopUp { party, amount, bank }).await?;
    let (number, amount) = outcome_or_error!(outcome, Outcome::ToppedUp { number, amount } => (number, amount))?;
    Ok((
        StatusCode::CREATED,
        Json(TopUp {
            id: state.ids.format(IdKind::TopUp, number),
            amount: amount.get(),
            status: "succeeded".to_string(),
        }),
    ))
}

#[utoipa::path(post, path = "/v1/withdrawals", tag = "money", request_body = NewWithdrawal,
    params(IdempotencyKey),
    responses((status = 201, body = WithdrawalView), ChangeErrors),
    security(("api_key" = [])))]
pub async fn create_withdrawal(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    body: JsonBody<NewWithdrawal>,
) -> Result<(StatusCode, Json<WithdrawalView>), ApiError> {
    let party = caller.require_party(&[PartyKind::User, PartyKind::Merchant])?;
    let amount = check_amount(body.value.amount)?;
    let outcome = state.submit(body.idempotency(caller), Action::Withdraw { party, amount }).await?;
    let (number, amount, fee) =
        outcome_or_error!(outcome, Outcome::WithdrawalRequested { number, amount, fee } => (number, amount, fee))?;
    let view = WithdrawalView {
        id: state.ids.format(IdKind::Withdrawal, number),
        amount: amount.get(),
        fee: fee.get(),
        status: "pending".to_string(),
    };
    Ok((StatusCode::CREATED, Json(view)))
}

#[utoipa::path(get, path = "/v1/withdrawals/{id}", tag = "money", params(("id" = String, Path, description = "wdr_…")),
    responses((status = 200, body = WithdrawalView), ReadErrors),
    security(("api_key" = [])))]
pub async fn get_withdrawal(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<WithdrawalView>, ApiError> {
    let number = id_of(&state.ids, IdKind::Withdrawal, &id, "withdrawal")?;
    let withdrawal =
        state.store.read(|p| p.withdrawal(number).cloned()).ok_or_else(|| ApiError::not_found("withdrawal"))?;
    // Another party's withdrawal does not exist, as far as this key can tell.
    if !caller.is_operator() && caller.scope() != withdrawal.party {
        return Err(ApiError::not_found("withdrawal"));
    }
    Ok(Json(WithdrawalView {
        id,
        amount: withdrawal.amount.get(),
        fee: withdrawal.fee.get(),
        status: withdrawal.status.name().to_string(),
    }))
}

#[utoipa::path(post, path = "/v1/transfers", tag = "money", request_body = NewTransfer,
    params(IdempotencyKey),
    responses((status = 201, body = TransferView), ChangeErrors),
    security(("api_key" = [])))]
pub async fn create_transfer(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    body: JsonBody<NewTransfer>,
) -> Result<(StatusCode, Json<TransferView>), ApiError> {
    let from = caller.require_party(&[PartyKind::User])?;
    let amount = check_amount(body.value.amount)?;
    let (to, kind) = state.ids.parse_party(&body.value.to).ok_or_else(|| ApiError::not_found("recipient"))?;
    let memo = body.value.memo.clone();
    if memo.as_ref().is_some_and(|memo| platform::text::check_optional_text(memo, 200).is_err()) {
        return Err(ApiError::invalid("memo must be at most 200 printable characters"));
    }
    let known = state.store.read(|p| p.party(to).is_some_and(|party| party.kind == kind));
    if !known {
        return Err(ApiError::not_found("recipient"));
    }
    let outcome = state.submit(body.idempotency(caller), Action::Transfer { from, to, amount, memo }).await?;
    let (number, amount, fee) =
        outcome_or_error!(outcome, Outcome::Transferred { number, amount, fee } => (number, amount, fee))?;
    Ok((
        StatusCode::CREATED,
        Json(TransferView { id: state.ids.format(IdKind::Transfer, number), amount: amount.get(), fee: fee.get() }),
    ))
}
