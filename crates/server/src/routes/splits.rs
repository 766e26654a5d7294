//! Profit sharing over REST: royalty relations (who may receive a
//! merchant's splits) and splits of a settled trade. The gateway's
//! `alipay.trade.royalty.relation.*` and `alipay.trade.order.settle*` are
//! the same actions (`gateway`).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use platform::{Action, Fen, Outcome, PartyKind, PartyNumber, TradeNumber};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ChangeErrors, IdempotencyKey, ReadErrors, id_of, outcome_or_error};
use crate::app::AppState;
use crate::auth::Caller;
use crate::body::{ApiQuery, JsonBody};
use crate::clock::rfc3339;
use crate::error::ApiError;
use crate::ids::{IdKind, PublicIds};

#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRelation {
    /// The receiver: a user (`usr_…`) or another merchant (`mch_…`).
    #[schema(pattern = "^(usr|mch)_[0-9a-f]{32}$")]
    pub receiver: String,
}

#[derive(Serialize, ToSchema)]
pub struct RelationView {
    pub receiver: String,
}

#[derive(Serialize, ToSchema)]
pub struct RelationPage {
    pub data: Vec<RelationView>,
    pub has_more: bool,
}

/// A party named by its public id, of either kind.
pub fn party_of_id(state: &AppState, id: &str) -> Result<PartyNumber, ApiError> {
    let kind = if id.starts_with("mch_") { IdKind::Merchant } else { IdKind::User };
    Ok(PartyNumber::new(id_of(&state.ids, kind, id, "party")?))
}

/// A party's public id, by its kind.
pub fn id_of_party(state: &AppState, party: PartyNumber) -> String {
    let kind = state.store.read(|p| p.party(party).map(|party| party.kind)).unwrap_or(PartyKind::User);
    state.ids.format(IdKind::of_party(kind), party)
}

async fn bind(state: &Arc<AppState>, caller: Caller, receiver: &str, bound: bool) -> Result<(), ApiError> {
    let merchant = caller.require_party(&[PartyKind::Merchant])?;
    let receiver = party_of_id(state, receiver)?;
    let outcome = state.submit(None, Action::BindRoyalty { merchant, receiver, bound }).await?;
    outcome_or_error!(outcome, Outcome::RoyaltyChanged => ())
}

#[utoipa::path(post, path = "/v1/royalty-relations", tag = "splits", request_body = NewRelation,
    responses((status = 201, body = RelationView), ChangeErrors),
    security(("api_key" = [])))]
pub async fn bind_receiver(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    body: JsonBody<NewRelation>,
) -> Result<(StatusCode, Json<RelationView>), ApiError> {
    bind(&state, caller, &body.value.receiver, true).await?;
    Ok((StatusCode::CREATED, Json(RelationView { receiver: body.value.receiver.clone() })))
}

#[utoipa::path(delete, path = "/v1/royalty-relations/{receiver}", tag = "splits",
    params(("receiver" = String, Path, description = "usr_… or mch_…")),
    responses((status = 200, body = RelationView), ChangeErrors),
    security(("api_key" = [])))]
pub async fn unbind_receiver(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(receiver): Path<String>,
) -> Result<Json<RelationView>, ApiError> {
    bind(&state, caller, &receiver, false).await?;
    Ok(Json(RelationView { receiver }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RelationParams {
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// A receiver's id: the page starts after it.
    #[param(pattern = "^(usr|mch)_[0-9a-f]{32}$")]
    pub starting_after: Option<String>,
}

#[utoipa::path(get, path = "/v1/royalty-relations", tag = "splits", params(RelationParams),
    responses((status = 200, body = RelationPage), ReadErrors),
    security(("api_key" = [])))]
pub async fn list_receivers(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(params): ApiQuery<RelationParams>,
) -> Result<Json<RelationPage>, ApiError> {
    let merchant = caller.require_party(&[PartyKind::Merchant])?;
    let limit = params.limit.unwrap_or(20);
    if limit == 0 || limit > super::PAGE_LIMIT_MAX {
        return Err(ApiError::invalid("limit must be between 1 and 100"));
    }
    let limit = limit as usize;
    let after = params.starting_after.as_deref().map(|id| party_of_id(&state, id)).transpose()?;
    let mut found: Vec<PartyNumber> =
        state.store.read(|p| p.royalty_receivers(merchant, after).take(limit + 1).collect());
    let has_more = found.len() > limit;
    found.truncate(limit);
    let data = found.into_iter().map(|receiver| RelationView { receiver: id_of_party(&state, receiver) }).collect();
    Ok(Json(RelationPage { data, has_more }))
}

#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SplitPart {
    /// A bound receiver (`usr_…` or `mch_…`).
    #[schema(pattern = "^(usr|mch)_[0-9a-f]{32}$")]
    pub to: String,
    #[serde(deserialize_with = "crate::body::whole")]
    #[schema(minimum = 1, maximum = 1_000_000_000_000_000_i64)]
    pub amount: u64,
}

#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SplitBody {
    /// Unique per trade; a retry with the same parts returns the same split.
    #[schema(min_length = 1, max_length = 64, pattern = "^[!-~]+$")]
    pub out_request_no: String,
    #[schema(min_items = 1, max_items = 20)]
    pub splits: Vec<SplitPart>,
}

#[derive(Serialize, ToSchema)]
pub struct SplitView {
    /// `spl_…`: the settle number.
    pub id: String,
    pub trade_no: String,
    pub out_request_no: String,
    pub splits: Vec<SplitPartView>,
    /// Everything split from this trade so far.
    pub trade_split_amount: u64,
    pub created: String,
}

#[derive(Serialize, ToSchema)]
pub struct SplitPartView {
    pub to: String,
    pub amount: u64,
}

pub fn split_view(state: &AppState, trade: &platform::Trade, split: &platform::trades::Split) -> SplitView {
    let ids: &PublicIds = &state.ids;
    SplitView {
        id: ids.format(IdKind::Split, split.number),
        trade_no: ids.format(IdKind::Trade, trade.number),
        out_request_no: split.out_request_no.clone(),
        splits: split
            .parts
            .iter()
            .map(|(to, amount)| SplitPartView { to: id_of_party(state, *to), amount: amount.get() })
            .collect(),
        trade_split_amount: trade.split.get(),
        created: rfc3339(split.created_at),
    }
}

/// The split action, for REST and the gateway alike.
pub async fn split(
    state: &Arc<AppState>,
    idempotency: Option<platform::IdempotencyTag>,
    merchant: PartyNumber,
    trade: TradeNumber,
    out_request_no: String,
    parts: Vec<(PartyNumber, Fen)>,
) -> Result<Outcome, ApiError> {
    state.submit(idempotency, Action::SplitTrade { trade, merchant, out_request_no, parts }).await
}

#[utoipa::path(post, path = "/v1/trades/{trade_no}/splits", tag = "splits", request_body = SplitBody,
    params(("trade_no" = String, Path, description = "trd_…"), IdempotencyKey),
    responses((status = 201, body = SplitView), ChangeErrors),
    security(("api_key" = [])))]
pub async fn create_split(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(trade_no): Path<String>,
    body: JsonBody<SplitBody>,
) -> Result<(StatusCode, Json<SplitView>), ApiError> {
    let merchant = caller.require_party(&[PartyKind::Merchant])?;
    let trade = TradeNumber::new(id_of(&state.ids, IdKind::Trade, &trade_no, "trade")?);
    let value = &body.value;
    let parts = value
        .splits
        .iter()
        .map(|part| Ok((party_of_id(&state, &part.to)?, crate::body::check_amount(part.amount)?)))
        .collect::<Result<Vec<_>, ApiError>>()?;
    let outcome = split(&state, body.idempotency(caller), merchant, trade, value.out_request_no.clone(), parts).await?;
    let (trade, split) = outcome_or_error!(outcome, Outcome::SplitCreated { trade, split } => (trade, split))?;
    Ok((StatusCode::CREATED, Json(split_view(&state, &trade, &split))))
}

#[derive(Serialize, ToSchema)]
pub struct SplitList {
    pub data: Vec<SplitView>,
}

/// `GET /v1/trades/{trade_no}/splits`: a trade's splits, oldest first (at
/// most `SPLITS_PER_TRADE_MAX`), to whoever may see the trade.
#[utoipa::path(get, path = "/v1/trades/{trade_no}/splits", tag = "splits",
    params(("trade_no" = String, Path, description = "trd_…")),
    responses((status = 200, body = SplitList), ReadErrors),
    security(("api_key" = [])))]
pub async fn list_splits(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(trade_no): Path<String>,
) -> Result<Json<SplitList>, ApiError> {
    let trade = super::trades::visible_trade(&state, caller, &trade_no)?;
    Ok(Json(SplitList { data: trade.splits.iter().map(|split| split_view(&state, &trade, split)).collect() }))
}
