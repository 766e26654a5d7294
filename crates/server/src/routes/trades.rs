//! Merchant trades: create, pay, ship, confirm, close, refund, look up; and
//! the events merchants are notified of.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use platform::{
    Action, CampaignNumber, CouponNumber, Event, EventData, Fen, NewTrade, Outcome, PartyKind, PartyNumber, PaySource,
    Target, Trade, TradeMode, TradeNumber, TradeStatus,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

use super::{ChangeErrors, IdempotencyKey, Page, ReadErrors, id_of, outcome_or_error};
use crate::app::AppState;
use crate::auth::{Caller, Duty, RequestTag, audited};
use crate::body::{ApiQuery, JsonBody, check_amount};
use crate::clock::rfc3339;
use crate::error::ApiError;
use crate::ids::{IdKind, PublicIds};

#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTradeBody {
    /// The merchant's own reference, unique per merchant: a retry with the
    /// same fields returns the same trade.
    #[schema(min_length = 1, max_length = 64, pattern = "^[!-~]+$")]
    pub out_trade_no: String,
    #[serde(deserialize_with = "crate::body::whole")]
    #[schema(minimum = 1, maximum = 1_000_000_000_000_000_i64)]
    pub amount: u64,
    #[schema(min_length = 1, max_length = 256)]
    pub subject: String,
    /// `instant` or `escrow` (guaranteed trade).
    #[schema(pattern = "^(instant|escrow)$")]
    pub mode: String,
    /// Only this user may pay.
    #[schema(pattern = "^usr_[0-9a-f]{32}$")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buyer: Option<String>,
    /// Escrow: days after shipping until the trade confirms itself (default 10).
    #[serde(default, deserialize_with = "crate::body::whole_option")]
    #[schema(minimum = 1, maximum = 365)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_confirm_days: Option<u32>,
    /// Minutes until an unpaid trade closes (default 30).
    #[serde(default, deserialize_with = "crate::body::whole_option")]
    #[schema(minimum = 1, maximum = 43_200)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expire_minutes: Option<u32>,
    /// A campaign (`cmp_…`, the platform's or this merchant's) whose discount the payment may get.
    #[schema(pattern = "^cmp_[0-9a-f]{32}$")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub campaign: Option<String>,
}

#[derive(Deserialize, Serialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct PayBody {
    /// `balance` (the default) or `fund` (the buyer's Yu'e Bao holding).
    #[schema(pattern = "^(balance|fund)$")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// One of the buyer's coupons (`cpn_…`): its campaign's discount applies, once.
    #[schema(pattern = "^cpn_[0-9a-f]{32}$")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coupon: Option<String>,
}

#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundBody {
    /// Unique per trade; a retry with the same amount returns the same refund.
    #[schema(min_length = 1, max_length = 64, pattern = "^[!-~]+$")]
    pub out_request_no: String,
    #[serde(deserialize_with = "crate::body::whole")]
    #[schema(minimum = 1, maximum = 1_000_000_000_000_000_i64)]
    pub amount: u64,
    #[schema(max_length = 256)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct TradeView {
    pub trade_no: String,
    pub out_trade_no: String,
    pub merchant: String,
    pub buyer: Option<String>,
    pub amount: u64,
    pub subject: String,
    pub mode: String,
    /// `WAIT_BUYER_PAY`, `WAIT_SELLER_SEND`, `WAIT_BUYER_CONFIRM`, `TRADE_SUCCESS`, `TRADE_CLOSED`.
    pub status: String,
    pub refunded_amount: u64,
    /// Moved to the merchant's receivers by profit sharing.
    pub split_amount: u64,
    /// Held in escrow for this trade: from an escrow payment until the trade
    /// settles (to the merchant) or closes, what the buyer paid less refunds.
    pub escrow_amount: u64,
    /// The merchant's fee, taken at settlement.
    pub fee: u64,
    /// Paid by the trade's campaign; the buyer paid `amount - discount`.
    pub discount: u64,
    /// Why the campaign gave no discount, when it did not.
    pub discount_note: Option<String>,
    pub auto_confirm_days: u32,
    pub created: String,
    pub expires_at: String,
    pub paid_at: Option<String>,
    pub shipped_at: Option<String>,
    pub confirm_due_at: Option<String>,
    pub settled_at: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct RefundView {
    pub id: String,
    pub trade_no: String,
    pub out_request_no: String,
    pub amount: u64,
    /// Always `succeeded`: refunds are applied at once.
    pub status: String,
    pub created: String,
}

#[derive(Serialize, ToSchema)]
pub struct TradePage {
    pub data: Vec<TradeView>,
    pub has_more: bool,
}

#[derive(Serialize, ToSchema)]
pub struct EventView {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub created: String,
    /// The trade, refund (with its trade) or withdrawal the event is about.
    #[schema(value_type = Object)]
    pub data: Value,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TradeListParams {
    #[param(min_length = 1, max_length = 64)]
    pub out_trade_no: Option<String>,
    /// Operators: only this merchant's trades (`mch_…`). With `out_trade_no`
    /// trades are found by merchants' reference indexes (this merchant's,
    /// or without it every merchant's), not a scan.
    #[param(pattern = "^mch_[0-9a-f]{32}$")]
    pub merchant: Option<String>,
    #[param(pattern = "^(WAIT_BUYER_PAY|WAIT_SELLER_SEND|WAIT_BUYER_CONFIRM|TRADE_SUCCESS|TRADE_CLOSED)$")]
    pub status: Option<String>,
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    #[param(pattern = "^trd_[0-9a-f]{32}$")]
    pub starting_after: Option<String>,
}

pub fn trade_view(ids: &PublicIds, trade: &Trade) -> TradeView {
    TradeView {
        trade_no: ids.format(IdKind::Trade, trade.number),
        out_trade_no: trade.out_trade_no.clone(),
        merchant: ids.format(IdKind::Merchant, trade.merchant),
        buyer: trade.payer.or(trade.buyer).map(|n| ids.format(IdKind::User, n)),
        amount: trade.amount.get(),
        subject: trade.subject.clone(),
        mode: trade.mode.name().to_string(),
        status: trade.status.name().to_string(),
        refunded_amount: trade.refunded.get(),
        split_amount: trade.split.get(),
        escrow_amount: trade.in_escrow().get(),
        fee: trade.fee.get(),
        discount: trade.discount.get(),
        discount_note: trade.discount_note.clone(),
        auto_confirm_days: trade.auto_confirm_days,
        created: rfc3339(trade.created_at),
        expires_at: rfc3339(trade.expire_at),
        paid_at: trade.paid_at.map(rfc3339),
        shipped_at: trade.shipped_at.map(rfc3339),
        confirm_due_at: trade.confirm_due_at.map(rfc3339),
        settled_at: trade.settled_at.map(rfc3339),
    }
}

fn refund_view(ids: &PublicIds, trade: &Trade, refund: &platform::Refund) -> RefundView {
    RefundView {
        id: ids.format(IdKind::Refund, refund.number),
        trade_no: ids.format(IdKind::Trade, trade.number),
        out_request_no: refund.out_request_no.clone(),
        amount: refund.amount.get(),
        status: "succeeded".to_string(),
        created: rfc3339(refund.created_at),
    }
}

/// An event as merchants receive it: the body of a notification and of
/// `GET /v1/events`. Rendered from the stored event, so every retry of a
/// notification carries the same bytes.
pub fn event_view(ids: &PublicIds, event: &Event) -> EventView {
    let data = match &event.data {
        EventData::Trade(trade) => json!(trade_view(ids, trade)),
        EventData::Refund { trade, refund } => {
            json!({ "refund": refund_view(ids, trade, refund), "trade": trade_view(ids, trade) })
        }
        EventData::Loan(loan) => json!({
            "id": ids.format(IdKind::Loan, loan.number),
            "status": loan.status.name(),
            "principal": loan.outstanding_principal,
            "owed": loan.owed(),
        }),
        EventData::Dispute(dispute) => json!({
            "id": ids.format(IdKind::Dispute, dispute.number),
            "trade_no": ids.format(IdKind::Trade, dispute.trade),
            "amount": dispute.amount,
            "status": dispute.status.name(),
            "refunded": dispute.refunded,
            "reason": dispute.reason,
            "note": dispute.note,
        }),
        EventData::Withdrawal(withdrawal) => json!({
            "id": ids.format(IdKind::Withdrawal, withdrawal.number),
            "amount": withdrawal.amount,
            "fee": withdrawal.fee,
            "status": withdrawal.status.name(),
        }),
    };
    EventView {
        id: ids.format(IdKind::Event, event.number),
        kind: event.kind.clone(),
        created: rfc3339(event.created_at),
        data,
    }
}

fn trade_number(state: &AppState, trade_no: &str) -> Result<TradeNumber, ApiError> {
    id_of(&state.ids, IdKind::Trade, trade_no, "trade").map(TradeNumber::new)
}

#[utoipa::path(get, path = "/v1/refunds/{id}", tag = "trades",
    params(("id" = String, Path, description = "rfd_…")),
    responses((status = 200, body = RefundView), ReadErrors),
    security(("api_key" = [])))]
pub async fn get_refund(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<RefundView>, ApiError> {
    let number = id_of(&state.ids, IdKind::Refund, &id, "refund")?;
    let reader = Arc::clone(&state);
    let found = tokio::task::spawn_blocking(move || {
        reader.store.read_with_archive(|p, archive| p.trade_by_refund(archive, number))
    })
    .await
    .map_err(|_| ApiError::internal("the request was dropped"))?
    .map_err(|error| ApiError::internal(format!("cannot read the trade: {error}")))?;
    match found {
        Some((trade, refund)) if may_see(caller, &trade) => Ok(Json(refund_view(&state.ids, &trade, &refund))),
        _ => Err(ApiError::not_found("refund")),
    }
}

/// Whether `caller` may see `trade`: its merchant, its buyer, the admin.
fn may_see(caller: Caller, trade: &Trade) -> bool {
    match caller {
        Caller::Admin | Caller::Staff { .. } => true,
        Caller::Party { number, kind: PartyKind::Merchant } => trade.merchant == number,
        Caller::Party { number, kind: PartyKind::User } => trade.payer == Some(number) || trade.buyer == Some(number),
    }
}

#[utoipa::path(post, path = "/v1/trades", tag = "trades", request_body = NewTradeBody,
    params(IdempotencyKey),
    responses((status = 201, body = TradeView), ChangeErrors),
    security(("api_key" = [])))]
pub async fn create_trade(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    body: JsonBody<NewTradeBody>,
) -> Result<(StatusCode, Json<TradeView>), ApiError> {
    let merchant = caller.require_party(&[PartyKind::Merchant])?;
    let value = &body.value;
    check_amount(value.amount)?;
    let mode = match value.mode.as_str() {
        "instant" => TradeMode::Instant,
        "escrow" => TradeMode::Escrow,
        _ => return Err(ApiError::invalid("mode must be instant or escrow")),
    };
    let buyer = value
        .buyer
        .as_ref()
        .map(|id| id_of(&state.ids, IdKind::User, id, "buyer").map(PartyNumber::new))
        .transpose()?;
    let campaign = value
        .campaign
        .as_ref()
        .map(|id| id_of(&state.ids, IdKind::Campaign, id, "campaign").map(CampaignNumber::new))
        .transpose()?;
    let new = NewTrade {
        campaign,
        merchant,
        out_trade_no: value.out_trade_no.clone(),
        amount: Fen::new(value.amount),
        subject: value.subject.clone(),
        mode,
        buyer,
        auto_confirm_days: value.auto_confirm_days,
        expire_minutes: value.expire_minutes,
        notify_url: None,
        passback_params: None,
    };
    let outcome = state.submit(body.idempotency(caller), Action::CreateTrade(new)).await?;
    let trade = outcome_or_error!(outcome, Outcome::TradeUpdated(trade) => trade)?;
    Ok((StatusCode::CREATED, Json(trade_view(&state.ids, &trade))))
}

/// Runs a trade action for the caller and answers with the trade.
/// A payment code is valid this long (clock time), as Alipay's.
const PAYMENT_CODE_SECONDS: u64 = 60;

#[derive(Serialize, ToSchema)]
pub struct PaymentCode {
    /// 18 digits, single use: what the buyer's app shows at a till, for
    /// `alipay.trade.pay` on the gateway.
    pub auth_code: String,
    pub expires_at: String,
}

#[utoipa::path(post, path = "/v1/payment-codes", tag = "trades",
    responses((status = 201, body = PaymentCode), ChangeErrors),
    security(("api_key" = [])))]
pub async fn create_payment_code(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<(StatusCode, Json<PaymentCode>), ApiError> {
    let user = caller.require_party(&[PartyKind::User])?;
    let mut random = [0u8; 16];
    getrandom::fill(&mut random).map_err(|_| ApiError::internal("no randomness for a payment code"))?;
    // Alipay's codes start 25 to 30; the rest is random digits.
    let code: String = "28".chars().chain(random.iter().map(|byte| char::from(b'0' + byte % 10))).collect();
    let expires_at = state.clock.now().plus_nanos(PAYMENT_CODE_SECONDS * 1_000_000_000);
    let outcome = state.submit(None, Action::IssuePaymentCode { user, code, expires_at }).await?;
    let (code, expires_at) =
        outcome_or_error!(outcome, Outcome::PaymentCodeIssued { code, expires_at } => (code, expires_at))?;
    Ok((StatusCode::CREATED, Json(PaymentCode { auth_code: code, expires_at: rfc3339(expires_at) })))
}

async fn act<T>(
    state: &Arc<AppState>,
    caller: Caller,
    body: &JsonBody<T>,
    action: Action,
) -> Result<Json<TradeView>, ApiError> {
    let outcome = state.submit(body.idempotency(caller), action).await?;
    let trade = outcome_or_error!(outcome, Outcome::TradeUpdated(trade) => trade)?;
    Ok(Json(trade_view(&state.ids, &trade)))
}

#[utoipa::path(post, path = "/v1/trades/{trade_no}/pay", tag = "trades", request_body = PayBody,
    params(("trade_no" = String, Path, description = "trd_…"), IdempotencyKey),
    responses((status = 200, body = TradeView), ChangeErrors),
    security(("api_key" = [])))]
pub async fn pay(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(trade_no): Path<String>,
    body: JsonBody<PayBody>,
) -> Result<Json<TradeView>, ApiError> {
    let buyer = caller.require_party(&[PartyKind::User])?;
    let trade = trade_number(&state, &trade_no)?;
    let source = match body.value.source.as_deref() {
        None | Some("balance") => PaySource::Balance,
        Some("fund") => PaySource::Fund,
        Some(_) => return Err(ApiError::invalid("source must be balance or fund")),
    };
    let coupon = body
        .value
        .coupon
        .as_ref()
        .map(|id| id_of(&state.ids, IdKind::Coupon, id, "coupon").map(CouponNumber::new))
        .transpose()?;
    act(&state, caller, &body, Action::PayTrade { trade, buyer, source, coupon }).await
}

#[utoipa::path(post, path = "/v1/trades/{trade_no}/ship", tag = "trades",
    params(("trade_no" = String, Path, description = "trd_…"), IdempotencyKey),
    responses((status = 200, body = TradeView), ChangeErrors),
    security(("api_key" = [])))]
pub async fn ship(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(trade_no): Path<String>,
    body: JsonBody<EmptyBody>,
) -> Result<Json<TradeView>, ApiError> {
    let merchant = caller.require_party(&[PartyKind::Merchant])?;
    act(&state, caller, &body, Action::ShipTrade { trade: trade_number(&state, &trade_no)?, merchant }).await
}

#[utoipa::path(post, path = "/v1/trades/{trade_no}/confirm", tag = "trades",
    params(("trade_no" = String, Path, description = "trd_…"), IdempotencyKey),
    responses((status = 200, body = TradeView), ChangeErrors),
    security(("api_key" = [])))]
pub async fn confirm(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(trade_no): Path<String>,
    body: JsonBody<EmptyBody>,
) -> Result<Json<TradeView>, ApiError> {
    let buyer = caller.require_party(&[PartyKind::User])?;
    act(&state, caller, &body, Action::ConfirmTrade { trade: trade_number(&state, &trade_no)?, buyer }).await
}

#[utoipa::path(post, path = "/v1/trades/{trade_no}/close", tag = "trades",
    params(("trade_no" = String, Path, description = "trd_…"), IdempotencyKey),
    responses((status = 200, body = TradeView), ChangeErrors),
    security(("api_key" = [])))]
pub async fn close(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    request: RequestTag,
    Path(trade_no): Path<String>,
    body: JsonBody<EmptyBody>,
) -> Result<Json<TradeView>, ApiError> {
    let trade = acting_on(caller).and_then(|()| trade_number(&state, &trade_no))?;
    let merchant = acting_merchant(&state, caller, trade)?;
    let action = audited(caller, &request, "trade.close", Target::Trade(trade), Action::CloseTrade { trade, merchant });
    act(&state, caller, &body, action).await
}

/// Whether `caller` may refund or close trades at all: merchants (their
/// own), support staff and admins (any); checked before the trade is looked for.
fn acting_on(caller: Caller) -> Result<(), ApiError> {
    if caller.is_operator() {
        caller.require(Duty::Support).map(|_| ())
    } else {
        caller.require_party(&[PartyKind::Merchant]).map(|_| ())
    }
}

/// The merchant a change of `trade` acts for: the caller, or for support
/// staff (and the admin) the trade's merchant.
fn acting_merchant(state: &AppState, caller: Caller, trade: TradeNumber) -> Result<PartyNumber, ApiError> {
    acting_on(caller)?;
    if !caller.is_operator() {
        return caller.require_party(&[PartyKind::Merchant]);
    }
    let found = state
        .store
        .read_with_archive(|p, archive| p.trade(archive, trade))
        .map_err(|error| ApiError::internal(format!("cannot read the trade: {error}")))?;
    found.map(|trade| trade.merchant).ok_or_else(|| ApiError::not_found("trade"))
}

/// Bodies of actions that take no fields: `{}` or nothing.
#[derive(Deserialize, Serialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct EmptyBody {}

#[utoipa::path(post, path = "/v1/trades/{trade_no}/refunds", tag = "trades", request_body = RefundBody,
    params(("trade_no" = String, Path, description = "trd_…"), IdempotencyKey),
    responses((status = 201, body = RefundView), ChangeErrors),
    security(("api_key" = [])))]
pub async fn refund(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    request: RequestTag,
    Path(trade_no): Path<String>,
    body: JsonBody<RefundBody>,
) -> Result<(StatusCode, Json<RefundView>), ApiError> {
    let trade = acting_on(caller).and_then(|()| trade_number(&state, &trade_no))?;
    let merchant = acting_merchant(&state, caller, trade)?;
    let value = &body.value;
    check_amount(value.amount)?;
    let action = Action::RefundTrade {
        trade,
        merchant,
        out_request_no: value.out_request_no.clone(),
        amount: Fen::new(value.amount),
        reason: value.reason.clone(),
    };
    let action = audited(caller, &request, "trade.refund", Target::Trade(trade), action);
    let outcome = state.submit(body.idempotency(caller), action).await?;
    let (trade, refund) = outcome_or_error!(outcome, Outcome::RefundCreated { trade, refund } => (trade, refund))?;
    Ok((StatusCode::CREATED, Json(refund_view(&state.ids, &trade, &refund))))
}

#[utoipa::path(get, path = "/v1/trades/{trade_no}", tag = "trades", params(("trade_no" = String, Path, description = "trd_…")),
    responses((status = 200, body = TradeView), ReadErrors),
    security(("api_key" = [])))]
pub async fn get_trade(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(trade_no): Path<String>,
) -> Result<Json<TradeView>, ApiError> {
    visible_trade(&state, caller, &trade_no).map(|trade| Json(trade_view(&state.ids, &trade)))
}

/// The trade `trade_no` names, if `caller` may see it (else 404: another
/// party's trade is not said to exist).
pub fn visible_trade(state: &AppState, caller: Caller, trade_no: &str) -> Result<Trade, ApiError> {
    let number = trade_number(state, trade_no)?;
    state
        .store
        .read_with_archive(|p, archive| p.trade(archive, number))
        .map_err(|error| ApiError::internal(format!("cannot read the trade: {error}")))?
        .filter(|trade| may_see(caller, trade))
        .ok_or_else(|| ApiError::not_found("trade"))
}

#[utoipa::path(get, path = "/v1/trades", tag = "trades", params(TradeListParams),
    responses((status = 200, body = TradePage), ReadErrors),
    security(("api_key" = [])))]
pub async fn list_trades(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(params): ApiQuery<TradeListParams>,
) -> Result<Json<TradePage>, ApiError> {
    let page = Page::from_params(params.limit, params.starting_after.as_deref(), &state.ids, IdKind::Trade)?;
    let status = match &params.status {
        None => None,
        Some(name) => Some(TradeStatus::parse(name).ok_or_else(|| ApiError::invalid("unknown status"))?),
    };
    let out_trade_no = params.out_trade_no.clone();
    if out_trade_no.as_ref().is_some_and(|no| no.is_empty() || no.chars().count() > 64) {
        return Err(ApiError::invalid("out_trade_no must be 1 to 64 characters"));
    }
    let merchant = match (&params.merchant, caller) {
        (None, Caller::Party { number, kind: PartyKind::Merchant }) => Some(number),
        (None, _) => None,
        (Some(id), _) => Some(PartyNumber::new(id_of(&state.ids, IdKind::Merchant, id, "merchant")?)),
    };
    if let (None, Some(out_trade_no)) = (merchant, &out_trade_no)
        && caller.is_operator()
    {
        let limit = page.limit;
        let found = state
            .store
            .read_with_archive(|p, archive| p.trades_by_out_trade_no_of_anyone(archive, out_trade_no, limit + 1))
            .map_err(|error| ApiError::internal(format!("cannot read the trades: {error}")))?;
        let after = page.after.unwrap_or(u64::MAX);
        let found: Vec<&Trade> = found
            .iter()
            .filter(|trade| trade.number.get() < after && status.is_none_or(|status| trade.status == status))
            .collect();
        let has_more = found.len() > limit;
        let data = found.iter().take(limit).map(|trade| trade_view(&state.ids, trade)).collect();
        return Ok(Json(TradePage { data, has_more }));
    }
    if let (Some(merchant), Some(out_trade_no)) = (merchant, &out_trade_no) {
        let found = state
            .store
            .read_with_archive(|p, archive| p.trade_by_out_trade_no(archive, merchant, out_trade_no))
            .map_err(|error| ApiError::internal(format!("cannot read the trade: {error}")))?
            .filter(|trade| may_see(caller, trade) && status.is_none_or(|status| trade.status == status));
        let data = found.iter().map(|trade| trade_view(&state.ids, trade)).collect();
        return Ok(Json(TradePage { data, has_more: false }));
    }
    let keep = move |trade: &Trade| {
        may_see(caller, trade)
            && merchant.is_none_or(|merchant| trade.merchant == merchant)
            && status.is_none_or(|status| trade.status == status)
            && out_trade_no.as_ref().is_none_or(|no| &trade.out_trade_no == no)
    };
    // Archived trades are read with the state's lock let go, off the async workers.
    let reader = Arc::clone(&state);
    // A party's own trades, along its chain (never everyone else's); an
    // operator's of one merchant along that merchant's.
    let chain = match caller {
        Caller::Party { number, kind } => Some((number, kind)),
        _ => merchant.map(|merchant| (merchant, PartyKind::Merchant)),
    };
    let mut found = tokio::task::spawn_blocking(move || match chain {
        Some((number, kind)) => platform::walk_party_trades(
            platform::PartyTrades {
                party: number,
                kind,
                head: reader.store.read(|p| p.last_trade_of(number)),
                starting_after: page.after.map(TradeNumber::new),
                limit: page.limit + 1,
                steps_max: reader.store.read(|p| p.trades_made()),
                keep: &keep,
            },
            |trade| Ok(reader.store.read(|p| p.trade_at(trade))),
            |offset| platform::read_archived_trade(reader.store.archive(), offset),
        ),
        None => platform::list_trades_newest_first(
            |before, max| Ok(reader.store.read(|p| p.trades_at_newest_first(before, max))),
            |offset| platform::read_archived_trade(reader.store.archive(), offset),
            page.after.map(TradeNumber::new),
            page.limit + 1,
            &keep,
        ),
    })
    .await
    .map_err(|_| ApiError::internal("the request was dropped"))?
    .map_err(|error| ApiError::internal(format!("cannot read the trades: {error}")))?;
    let has_more = found.len() > page.limit;
    found.truncate(page.limit);
    Ok(Json(TradePage { data: found.iter().map(|trade| trade_view(&state.ids, trade)).collect(), has_more }))
}
