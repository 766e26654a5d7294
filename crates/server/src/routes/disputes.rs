//! Disputes on escrow trades (`platform::disputes`): the buyer opens and
//! escalates, the merchant accepts or rejects, support staff decide an
//! escalated one. A dispute is visible to its buyer, its merchant and
//! operators; to anyone else it does not exist.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use platform::disputes::{Dispute, DisputeStep};
use platform::{Action, Fen, Outcome, PartyKind, PartyNumber, Target};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ChangeErrors, IdempotencyKey, Page, ReadErrors, id_of, outcome_or_error};
use crate::app::AppState;
use crate::auth::{Caller, Duty, RequestTag, audited};
use crate::body::{ApiQuery, JsonBody, check_amount};
use crate::clock::rfc3339;
use crate::error::ApiError;
use crate::ids::IdKind;

#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDispute {
    /// What the buyer asks back, at most what it paid less refunds.
    #[serde(deserialize_with = "crate::body::whole")]
    #[schema(minimum = 1, maximum = 1_000_000_000_000_000_i64)]
    pub amount: u64,
    #[schema(min_length = 1, max_length = 500)]
    pub reason: String,
}

#[derive(Deserialize, Serialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct DisputeNote {
    /// The merchant's reason for rejecting.
    #[schema(max_length = 500)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    /// What the buyer gets back: 0 to the dispute's amount.
    #[serde(deserialize_with = "crate::body::whole")]
    #[schema(minimum = 0, maximum = 1_000_000_000_000_000_i64)]
    pub refund_amount: u64,
}

#[derive(Serialize, ToSchema)]
pub struct DisputeView {
    /// `dsp_…`
    pub id: String,
    pub trade_no: String,
    pub buyer: String,
    pub merchant: String,
    pub amount: u64,
    pub reason: String,
    /// `open`, `rejected`, `escalated`, `accepted`, `decided`, `closed`.
    pub status: String,
    pub note: Option<String>,
    /// When the clock acts: an open dispute is accepted, a rejected one closed.
    pub due_at: Option<String>,
    /// What the outcome refunded, and the refund (`rfd_…`).
    pub refunded: u64,
    pub refund: Option<String>,
    /// The clock ended it (no answer, or no escalation, in 5 days).
    pub by_clock: bool,
    pub created: String,
    pub updated: String,
}

#[derive(Serialize, ToSchema)]
pub struct DisputePage {
    pub data: Vec<DisputeView>,
    pub has_more: bool,
}

pub fn dispute_view(state: &AppState, dispute: &Dispute) -> DisputeView {
    let ids = &state.ids;
    DisputeView {
        id: ids.format(IdKind::Dispute, dispute.number),
        trade_no: ids.format(IdKind::Trade, dispute.trade),
        buyer: ids.format(IdKind::User, dispute.buyer),
        merchant: ids.format(IdKind::Merchant, dispute.merchant),
        amount: dispute.amount.get(),
        reason: dispute.reason.clone(),
        status: dispute.status.name().to_string(),
        note: dispute.note.clone(),
        due_at: dispute.due_at.map(rfc3339),
        refunded: dispute.refunded.get(),
        refund: dispute.refund.map(|refund| ids.format(IdKind::Refund, refund)),
        by_clock: dispute.by_clock,
        created: rfc3339(dispute.created_at),
        updated: rfc3339(dispute.updated_at),
    }
}

fn may_see(caller: Caller, dispute: &Dispute) -> bool {
    match caller {
        Caller::Party { number, .. } => number == dispute.buyer || number == dispute.merchant,
        _ => true,
    }
}

/// The dispute `id` names, if `caller` may see it.
fn visible(state: &AppState, caller: Caller, id: &str) -> Result<Dispute, ApiError> {
    let number = id_of(&state.ids, IdKind::Dispute, id, "dispute")?;
    state
        .store
        .read(|p| p.dispute(number).cloned())
        .filter(|dispute| may_see(caller, dispute))
        .ok_or_else(|| ApiError::not_found("dispute"))
}

#[utoipa::path(post, path = "/v1/trades/{trade_no}/disputes", tag = "disputes", request_body = NewDispute,
    params(("trade_no" = String, Path, description = "trd_…"), IdempotencyKey),
    responses((status = 201, body = DisputeView), ChangeErrors),
    security(("api_key" = [])))]
pub async fn open(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(trade_no): Path<String>,
    body: JsonBody<NewDispute>,
) -> Result<(StatusCode, Json<DisputeView>), ApiError> {
    let buyer = caller.require_party(&[PartyKind::User])?;
    let trade = platform::TradeNumber::new(id_of(&state.ids, IdKind::Trade, &trade_no, "trade")?);
    let value = &body.value;
    let amount = check_amount(value.amount)?;
    let action = Action::OpenDispute { trade, buyer, amount, reason: value.reason.clone() };
    let outcome = state.submit(body.idempotency(caller), action).await?;
    let dispute = outcome_or_error!(outcome, Outcome::DisputeUpdated(dispute) => dispute)?;
    Ok((StatusCode::CREATED, Json(dispute_view(&state, &dispute))))
}

#[utoipa::path(get, path = "/v1/disputes/{id}", tag = "disputes", params(("id" = String, Path, description = "dsp_…")),
    responses((status = 200, body = DisputeView), ReadErrors),
    security(("api_key" = [])))]
pub async fn get(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<DisputeView>, ApiError> {
    visible(&state, caller, &id).map(|dispute| Json(dispute_view(&state, &dispute)))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DisputeParams {
    /// A trade's disputes, oldest first.
    #[param(pattern = "^trd_[0-9a-f]{32}$")]
    pub trade: Option<String>,
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// A dispute's id: the page continues after it.
    #[param(pattern = "^dsp_[0-9a-f]{32}$")]
    pub starting_after: Option<String>,
}

/// `GET /v1/disputes`: a party's disputes (as buyer or merchant), newest
/// first; for operators the disputes not over, oldest first (the queue);
/// with `trade=` that trade's.
#[utoipa::path(get, path = "/v1/disputes", tag = "disputes", params(DisputeParams),
    responses((status = 200, body = DisputePage), ReadErrors),
    security(("api_key" = [])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(params): ApiQuery<DisputeParams>,
) -> Result<Json<DisputePage>, ApiError> {
    if caller.is_operator() {
        caller.require(Duty::Read)?;
    }
    let Page { limit, after } =
        Page::from_params(params.limit, params.starting_after.as_deref(), &state.ids, IdKind::Dispute)?;
    let trade = params
        .trade
        .as_deref()
        .map(|id| id_of(&state.ids, IdKind::Trade, id, "trade").map(platform::TradeNumber::new))
        .transpose()?;
    let mut found: Vec<Dispute> = state.store.read(|p| {
        let take = |it: &mut dyn Iterator<Item = &Dispute>| it.take(limit + 1).cloned().collect::<Vec<_>>();
        match (trade, caller) {
            (Some(trade), _) => take(
                &mut p
                    .disputes_of_trade(trade)
                    .into_iter()
                    .filter(|d| may_see(caller, d) && after.is_none_or(|after| d.number > after)),
            ),
            (None, Caller::Party { number, .. }) => take(&mut p.disputes_of_party(number, after)),
            (None, _) => take(&mut p.disputes_open(after)),
        }
    });
    let has_more = found.len() > limit;
    found.truncate(limit);
    Ok(Json(DisputePage { data: found.iter().map(|d| dispute_view(&state, d)).collect(), has_more }))
}

/// A step on dispute `id` by `actor` (None: the operator).
async fn step(
    state: &Arc<AppState>,
    caller: Caller,
    request: &RequestTag,
    idempotency: Option<platform::IdempotencyTag>,
    dispute: &Dispute,
    (actor, step, note): (Option<PartyNumber>, DisputeStep, Option<String>),
) -> Result<Json<DisputeView>, ApiError> {
    let action = Action::StepDispute { dispute: dispute.number, actor, step, note };
    let name = match step {
        DisputeStep::Accept => "dispute.accept",
        DisputeStep::Reject => "dispute.reject",
        DisputeStep::Escalate => "dispute.escalate",
        DisputeStep::Decide { .. } => "dispute.decide",
    };
    let action = audited(caller, request, name, Target::Trade(dispute.trade), action);
    let outcome = state.submit(idempotency, action).await?;
    let dispute = outcome_or_error!(outcome, Outcome::DisputeUpdated(dispute) => dispute)?;
    Ok(Json(dispute_view(state, &dispute)))
}

/// The dispute a merchant's step is on, and the merchant it acts for: the
/// caller, or for support staff the dispute's merchant (roles checked
/// before the dispute is looked up).
fn merchant_step(state: &AppState, caller: Caller, id: &str) -> Result<(Dispute, PartyNumber), ApiError> {
    let merchant = if caller.is_operator() {
        caller.require(Duty::Support)?;
        None
    } else {
        Some(caller.require_party(&[PartyKind::Merchant])?)
    };
    let dispute = visible(state, caller, id)?;
    let merchant = merchant.unwrap_or(dispute.merchant);
    Ok((dispute, merchant))
}

#[utoipa::path(post, path = "/v1/disputes/{id}/accept", tag = "disputes", request_body = DisputeNote,
    params(("id" = String, Path, description = "dsp_…"), IdempotencyKey),
    responses((status = 200, body = DisputeView), ChangeErrors),
    security(("api_key" = [])))]
pub async fn accept(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    request: RequestTag,
    Path(id): Path<String>,
    body: JsonBody<DisputeNote>,
) -> Result<Json<DisputeView>, ApiError> {
    merchant_answer(&state, caller, &request, &id, &body, DisputeStep::Accept).await
}

#[utoipa::path(post, path = "/v1/disputes/{id}/reject", tag = "disputes", request_body = DisputeNote,
    params(("id" = String, Path, description = "dsp_…"), IdempotencyKey),
    responses((status = 200, body = DisputeView), ChangeErrors),
    security(("api_key" = [])))]
pub async fn reject(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    request: RequestTag,
    Path(id): Path<String>,
    body: JsonBody<DisputeNote>,
) -> Result<Json<DisputeView>, ApiError> {
    merchant_answer(&state, caller, &request, &id, &body, DisputeStep::Reject).await
}

/// The merchant's answer (`accept`, `reject`), by the merchant or support staff.
async fn merchant_answer(
    state: &Arc<AppState>,
    caller: Caller,
    request: &RequestTag,
    id: &str,
    body: &JsonBody<DisputeNote>,
    answer: DisputeStep,
) -> Result<Json<DisputeView>, ApiError> {
    let (dispute, merchant) = merchant_step(state, caller, id)?;
    let how = (Some(merchant), answer, body.value.note.clone());
    step(state, caller, request, body.idempotency(caller), &dispute, how).await
}

#[utoipa::path(post, path = "/v1/disputes/{id}/escalate", tag = "disputes", request_body = DisputeNote,
    params(("id" = String, Path, description = "dsp_…"), IdempotencyKey),
    responses((status = 200, body = DisputeView), ChangeErrors),
    security(("api_key" = [])))]
pub async fn escalate(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    request: RequestTag,
    Path(id): Path<String>,
    body: JsonBody<DisputeNote>,
) -> Result<Json<DisputeView>, ApiError> {
    let buyer = caller.require_party(&[PartyKind::User])?;
    let dispute = visible(&state, caller, &id)?;
    let how = (Some(buyer), DisputeStep::Escalate, body.value.note.clone());
    step(&state, caller, &request, body.idempotency(caller), &dispute, how).await
}

#[utoipa::path(post, path = "/v1/admin/disputes/{id}/decide", tag = "disputes", request_body = Decision,
    params(("id" = String, Path, description = "dsp_…"), IdempotencyKey),
    responses((status = 200, body = DisputeView), ChangeErrors),
    security(("api_key" = [])))]
pub async fn decide(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    request: RequestTag,
    Path(id): Path<String>,
    body: JsonBody<Decision>,
) -> Result<Json<DisputeView>, ApiError> {
    caller.require(Duty::Support)?;
    let dispute = visible(&state, caller, &id)?;
    if body.value.refund_amount > platform::AMOUNT_MAX {
        return Err(ApiError::invalid("refund_amount must be 0 to 10^15 fen"));
    }
    let how = (None, DisputeStep::Decide { refund: Fen::new(body.value.refund_amount) }, None);
    step(&state, caller, &request, body.idempotency(caller), &dispute, how).await
}
