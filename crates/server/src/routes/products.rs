//! Yu'e Bao (the fund), campaigns and red packets.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use platform::calendar::Date;
use platform::{
    Action, Campaign, CampaignNumber, Fen, NewCampaign, Outcome, PartyKind, PartyNumber, RedPacketNumber, SplitMode,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ChangeErrors, IdempotencyKey, ReadErrors, id_of, outcome_or_error};
use crate::app::AppState;
use crate::auth::{Caller, RequestTag, audited};
use crate::body::{ApiQuery, JsonBody, check_amount};
use crate::clock::{parse_rfc3339_clamped, rfc3339};
use crate::error::ApiError;
use crate::ids::{IdKind, PublicIds};

#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FundAmount {
    /// In fen; subscriptions start at 100 (1 yuan).
    #[serde(deserialize_with = "crate::body::whole")]
    #[schema(minimum = 1, maximum = 1_000_000_000_000_000_i64)]
    pub amount: u64,
}

#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionAmount {
    /// In fen, at least 100 (1 yuan).
    #[serde(deserialize_with = "crate::body::whole")]
    #[schema(minimum = 100, maximum = 1_000_000_000_000_000_i64)]
    pub amount: u64,
}

#[derive(Serialize, ToSchema)]
pub struct FundMove {
    pub id: String,
    pub amount: u64,
    /// The holding's value after the move.
    pub value: u64,
}

#[derive(Serialize, ToSchema)]
pub struct FundView {
    /// The holding, in fen (the unit value is fixed at 1 fen).
    pub value: u64,
    /// Paid for the most recent day the fund paid yield.
    pub yesterday_yield: u64,
    pub total_yield: u64,
}

#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct YieldRequest {
    /// A business day (China Standard Time) that has ended on the clock.
    #[schema(pattern = "^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])$")]
    pub date: String,
    /// Annual rate in basis points; a day is 1/365 of it.
    #[serde(deserialize_with = "crate::body::whole")]
    #[schema(minimum = 0, maximum = 10_000)]
    pub annual_rate_bps: u32,
}

#[derive(Serialize, ToSchema)]
pub struct YieldView {
    pub date: String,
    pub annual_rate_bps: u32,
    /// The day's income, all of it paid to holders.
    pub income: u64,
    pub holders_paid: u64,
    pub fund_value: u64,
}

#[utoipa::path(post, path = "/v1/fund/subscriptions", tag = "fund", request_body = SubscriptionAmount,
    params(IdempotencyKey),
    responses((status = 201, body = FundMove), ChangeErrors),
    security(("api_key" = [])))]
pub async fn subscribe(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    body: JsonBody<SubscriptionAmount>,
) -> Result<(StatusCode, Json<FundMove>), ApiError> {
    let party = caller.require_party(&[PartyKind::User])?;
    let amount = check_amount(body.value.amount)?;
    fund_move(&state, caller, &body, Action::FundSubscribe { party, amount }, party).await
}

#[utoipa::path(post, path = "/v1/fund/redemptions", tag = "fund", request_body = FundAmount,
    params(IdempotencyKey),
    responses((status = 201, body = FundMove), ChangeErrors),
    security(("api_key" = [])))]
pub async fn redeem(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    body: JsonBody<FundAmount>,
) -> Result<(StatusCode, Json<FundMove>), ApiError> {
    let party = caller.require_party(&[PartyKind::User])?;
    let amount = check_amount(body.value.amount)?;
    fund_move(&state, caller, &body, Action::FundRedeem { party, amount }, party).await
}

async fn fund_move<T>(
    state: &Arc<AppState>,
    caller: Caller,
    body: &JsonBody<T>,
    action: Action,
    party: PartyNumber,
) -> Result<(StatusCode, Json<FundMove>), ApiError> {
    let outcome = state.submit(body.idempotency(caller), action).await?;
    let (number, amount) = outcome_or_error!(outcome, Outcome::FundMoved { number, amount } => (number, amount))?;
    let value = state.store.read(|p| p.fund_position(party).value);
    Ok((
        StatusCode::CREATED,
        Json(FundMove { id: state.ids.format(IdKind::FundOrder, number), amount: amount.get(), value: value.get() }),
    ))
}

#[utoipa::path(get, path = "/v1/fund", tag = "fund",
    responses((status = 200, body = FundView), ReadErrors),
    security(("api_key" = [])))]
pub async fn position(State(state): State<Arc<AppState>>, caller: Caller) -> Result<Json<FundView>, ApiError> {
    let party = caller.require_party(&[PartyKind::User])?;
    let position = state.store.read(|p| p.fund_position(party));
    Ok(Json(FundView {
        value: position.value.get(),
        yesterday_yield: position.yesterday_yield.get(),
        total_yield: position.total_yield.get(),
    }))
}

#[utoipa::path(post, path = "/v1/admin/fund/yield", tag = "fund", request_body = YieldRequest,
    responses((status = 200, body = YieldView), ChangeErrors),
    security(("api_key" = [])))]
pub async fn pay_yield(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    request: RequestTag,
    body: JsonBody<YieldRequest>,
) -> Result<Json<YieldView>, ApiError> {
    caller.require_admin()?;
    let date = Date::parse(&body.value.date).ok_or_else(|| ApiError::invalid("date must be a day like 2013-11-11"))?;
    let action = Action::FundYield { date, annual_rate_bps: body.value.annual_rate_bps };
    let action = audited(caller, &request, "fund.yield", platform::Target::Named(format!("fund_yield:{date}")), action);
    let outcome = state.submit(body.idempotency(caller), action).await?;
    let day = outcome_or_error!(outcome, Outcome::FundYieldPaid(day) => day)?;
    Ok(Json(YieldView {
        date: day.date.to_string(),
        annual_rate_bps: day.annual_rate_bps,
        income: day.income.get(),
        holders_paid: day.holders_paid,
        fund_value: day.fund_value.get(),
    }))
}

#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCampaignBody {
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    /// Moved into the campaign from the sponsor at once.
    #[serde(deserialize_with = "crate::body::whole")]
    #[schema(minimum = 1, maximum = 1_000_000_000_000_000_i64)]
    pub budget: u64,
    /// Paid by the campaign on each qualifying trade (at most the budget).
    #[serde(deserialize_with = "crate::body::whole")]
    #[schema(minimum = 1, maximum = 1_000_000_000_000_000_i64)]
    pub discount: u64,
    #[serde(deserialize_with = "crate::body::whole")]
    #[schema(minimum = 0, maximum = 1_000_000_000_000_000_i64)]
    pub min_spend: u64,
    #[serde(deserialize_with = "crate::body::whole")]
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub per_user_limit: u32,
    /// RFC 3339.
    #[schema(format = DateTime)]
    pub starts_at: String,
    /// RFC 3339, after `starts_at` and in the future; the unspent budget goes back then.
    #[schema(format = DateTime)]
    pub ends_at: String,
}

#[derive(Serialize, ToSchema)]
pub struct CampaignView {
    pub id: String,
    /// `mch_…`, or `platform`.
    pub sponsor: String,
    pub name: String,
    pub budget: u64,
    pub spent: u64,
    pub remaining: u64,
    pub discount: u64,
    pub min_spend: u64,
    pub per_user_limit: u32,
    pub starts_at: String,
    pub ends_at: String,
    /// What went back to the sponsor at the end (absent while running).
    pub returned: Option<u64>,
    /// Paused by its sponsor: no discounts until resumed.
    pub paused: bool,
}

fn campaign_view(ids: &PublicIds, campaign: &Campaign) -> CampaignView {
    CampaignView {
        id: ids.format(IdKind::Campaign, campaign.number),
        sponsor: campaign.sponsor.map_or("platform".to_string(), |n| ids.format(IdKind::Merchant, n)),
        name: campaign.name.clone(),
        budget: campaign.budget.get(),
        spent: campaign.spent.get(),
        remaining: campaign.remaining().get(),
        discount: campaign.discount.get(),
        min_spend: campaign.min_spend.get(),
        per_user_limit: campaign.per_user_limit,
        starts_at: rfc3339(campaign.starts_at),
        ends_at: rfc3339(campaign.ends_at),
        returned: campaign.returned.map(Fen::get),
        paused: campaign.paused,
    }
}

#[utoipa::path(post, path = "/v1/campaigns", tag = "marketing", request_body = NewCampaignBody,
    params(IdempotencyKey),
    responses((status = 201, body = CampaignView), ChangeErrors),
    security(("api_key" = [])))]
pub async fn create_campaign(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    request: RequestTag,
    body: JsonBody<NewCampaignBody>,
) -> Result<(StatusCode, Json<CampaignView>), ApiError> {
    let sponsor = match caller {
        Caller::Admin | Caller::Staff { .. } => {
            caller.require_admin()?;
            None
        }
        Caller::Party { number, kind: PartyKind::Merchant } => Some(number),
        Caller::Party { .. } => return Err(ApiError::forbidden()),
    };
    let value = &body.value;
    let starts_at = parse_rfc3339_clamped(&value.starts_at)
        .ok_or_else(|| ApiError::invalid("starts_at must be an RFC 3339 time"))?;
    let ends_at =
        parse_rfc3339_clamped(&value.ends_at).ok_or_else(|| ApiError::invalid("ends_at must be an RFC 3339 time"))?;
    let new = NewCampaign {
        sponsor,
        name: value.name.clone(),
        budget: check_amount(value.budget)?,
        discount: check_amount(value.discount)?,
        min_spend: Fen::new(value.min_spend),
        per_user_limit: value.per_user_limit,
        starts_at,
        ends_at,
    };
    let action = audited(caller, &request, "campaign.create", platform::Target::None, Action::CreateCampaign(new));
    let outcome = state.submit(body.idempotency(caller), action).await?;
    let campaign = outcome_or_error!(outcome, Outcome::CampaignCreated(campaign) => campaign)?;
    Ok((StatusCode::CREATED, Json(campaign_view(&state.ids, &campaign))))
}

#[utoipa::path(get, path = "/v1/campaigns/{id}", tag = "marketing", params(("id" = String, Path, description = "cmp_…")),
    responses((status = 200, body = CampaignView), ReadErrors),
    security(("api_key" = [])))]
pub async fn get_campaign(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<CampaignView>, ApiError> {
    let number = CampaignNumber::new(id_of(&state.ids, IdKind::Campaign, &id, "campaign")?);
    let campaign = state.store.read(|p| p.campaign(number).cloned()).ok_or_else(|| ApiError::not_found("campaign"))?;
    let visible = match caller {
        Caller::Admin | Caller::Staff { .. } => true,
        Caller::Party { number, .. } => campaign.sponsor == Some(number),
    };
    if !visible {
        return Err(ApiError::not_found("campaign"));
    }
    Ok(Json(campaign_view(&state.ids, &campaign)))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CampaignListParams {
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    #[param(pattern = "^cmp_[0-9a-f]{32}$")]
    pub starting_after: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct CampaignPage {
    pub data: Vec<CampaignView>,
    pub has_more: bool,
}

#[utoipa::path(get, path = "/v1/campaigns", tag = "marketing", params(CampaignListParams),
    responses((status = 200, body = CampaignPage), ReadErrors),
    security(("api_key" = [])))]
pub async fn list_campaigns(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(params): ApiQuery<CampaignListParams>,
) -> Result<Json<CampaignPage>, ApiError> {
    let sponsor = match caller {
        Caller::Admin | Caller::Staff { .. } => None,
        Caller::Party { number, kind: PartyKind::Merchant } => Some(number),
        Caller::Party { .. } => return Err(ApiError::forbidden()),
    };
    let page = super::Page::from_params(params.limit, params.starting_after.as_deref(), &state.ids, IdKind::Campaign)?;
    let before = CampaignNumber::new(page.after.unwrap_or(u64::MAX));
    let mut found: Vec<CampaignView> = state.store.read(|p| {
        p.campaigns_before(before)
            .filter(|campaign| sponsor.is_none_or(|sponsor| campaign.sponsor == Some(sponsor)))
            .take(page.limit + 1)
            .map(|campaign| campaign_view(&state.ids, campaign))
            .collect()
    });
    let has_more = found.len() > page.limit;
    found.truncate(page.limit);
    Ok(Json(CampaignPage { data: found, has_more }))
}

#[utoipa::path(post, path = "/v1/campaigns/{id}/pause", tag = "marketing",
    params(("id" = String, Path, description = "cmp_…"), IdempotencyKey),
    responses((status = 200, body = CampaignView), ChangeErrors),
    security(("api_key" = [])))]
pub async fn pause_campaign(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    request: RequestTag,
    Path(id): Path<String>,
    body: JsonBody<super::trades::EmptyBody>,
) -> Result<Json<CampaignView>, ApiError> {
    set_paused(&state, caller, &request, &id, &body, true).await
}

#[utoipa::path(post, path = "/v1/campaigns/{id}/resume", tag = "marketing",
    params(("id" = String, Path, description = "cmp_…"), IdempotencyKey),
    responses((status = 200, body = CampaignView), ChangeErrors),
    security(("api_key" = [])))]
pub async fn resume_campaign(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    request: RequestTag,
    Path(id): Path<String>,
    body: JsonBody<super::trades::EmptyBody>,
) -> Result<Json<CampaignView>, ApiError> {
    set_paused(&state, caller, &request, &id, &body, false).await
}

/// A campaign's sponsor (a merchant, or for the platform's an admin) pauses or resumes it.
async fn set_paused(
    state: &Arc<AppState>,
    caller: Caller,
    request: &RequestTag,
    id: &str,
    body: &JsonBody<super::trades::EmptyBody>,
    paused: bool,
) -> Result<Json<CampaignView>, ApiError> {
    let sponsor = match caller {
        Caller::Admin | Caller::Staff { .. } => {
            caller.require_admin()?;
            None
        }
        Caller::Party { number, kind: PartyKind::Merchant } => Some(number),
        Caller::Party { .. } => return Err(ApiError::forbidden()),
    };
    let campaign = CampaignNumber::new(id_of(&state.ids, IdKind::Campaign, id, "campaign")?);
    let what = if paused { "campaign.pause" } else { "campaign.resume" };
    let action = audited(
        caller,
        request,
        what,
        platform::Target::Campaign(campaign),
        Action::PauseCampaign { campaign, sponsor, paused },
    );
    let outcome = state.submit(body.idempotency(caller), action).await?;
    let campaign = outcome_or_error!(outcome, Outcome::CampaignCreated(campaign) => campaign)?;
    Ok(Json(campaign_view(&state.ids, &campaign)))
}

#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCoupon {
    /// The user it is for.
    #[schema(pattern = "^usr_[0-9a-f]{32}$")]
    pub user: String,
    /// RFC 3339; at most the campaign's end (the default).
    #[schema(format = DateTime)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct CouponView {
    pub id: String,
    pub campaign: String,
    pub user: String,
    pub expires_at: String,
    /// The trade it paid part of, once used.
    pub used_on: Option<String>,
}

#[utoipa::path(post, path = "/v1/campaigns/{id}/coupons", tag = "marketing", request_body = NewCoupon,
    params(("id" = String, Path, description = "cmp_…"), IdempotencyKey),
    responses((status = 201, body = CouponView), ChangeErrors),
    security(("api_key" = [])))]
pub async fn issue_coupon(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    request: RequestTag,
    Path(id): Path<String>,
    body: JsonBody<NewCoupon>,
) -> Result<(StatusCode, Json<CouponView>), ApiError> {
    let issuer = match caller {
        Caller::Admin | Caller::Staff { .. } => {
            caller.require_admin()?;
            None
        }
        Caller::Party { number, kind: PartyKind::Merchant } => Some(number),
        Caller::Party { .. } => return Err(ApiError::forbidden()),
    };
    let campaign = CampaignNumber::new(id_of(&state.ids, IdKind::Campaign, &id, "campaign")?);
    let user = PartyNumber::new(id_of(&state.ids, IdKind::User, &body.value.user, "user")?);
    let expires_at = match &body.value.expires_at {
        None => None,
        Some(text) => {
            Some(parse_rfc3339_clamped(text).ok_or_else(|| ApiError::invalid("expires_at must be an RFC 3339 time"))?)
        }
    };
    let action = Action::IssueCoupon { campaign, issuer, user, expires_at };
    let action = audited(caller, &request, "coupon.issue", platform::Target::Party(user), action);
    let outcome = state.submit(body.idempotency(caller), action).await?;
    let coupon = outcome_or_error!(outcome, Outcome::CouponIssued(coupon) => coupon)?;
    Ok((
        StatusCode::CREATED,
        Json(CouponView {
            id: state.ids.format(IdKind::Coupon, coupon.number),
            campaign: state.ids.format(IdKind::Campaign, coupon.campaign),
            user: state.ids.format(IdKind::User, coupon.user),
            expires_at: rfc3339(coupon.expires_at),
            used_on: coupon.used_on.map(|t| state.ids.format(IdKind::Trade, t)),
        }),
    ))
}

#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRedPacket {
    #[serde(deserialize_with = "crate::body::whole")]
    #[schema(minimum = 1, maximum = 1_000_000_000_000_000_i64)]
    pub total: u64,
    /// 1 to 1,000 shares, and at most `total` (every share is at least 1 fen).
    #[serde(deserialize_with = "crate::body::whole")]
    #[schema(minimum = 1, maximum = 1000)]
    pub count: u32,
    /// `random` (lucky money) or `equal`.
    #[schema(pattern = "^(random|equal)$")]
    pub mode: String,
    #[schema(max_length = 200)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub greeting: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct RedPacketView {
    pub id: String,
    pub total: u64,
    pub count: u32,
    pub mode: String,
    pub claimed: u32,
    /// Not yet claimed (and not yet returned).
    pub remaining: u64,
    pub expires_at: String,
}

#[derive(Serialize, ToSchema)]
pub struct Claim {
    pub amount: u64,
}

#[utoipa::path(post, path = "/v1/red-packets", tag = "marketing", request_body = NewRedPacket,
    params(IdempotencyKey),
    responses((status = 201, body = RedPacketView), ChangeErrors),
    security(("api_key" = [])))]
pub async fn create_red_packet(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    body: JsonBody<NewRedPacket>,
) -> Result<(StatusCode, Json<RedPacketView>), ApiError> {
    let sender = caller.require_party(&[PartyKind::User])?;
    let value = &body.value;
    let mode = match value.mode.as_str() {
        "random" => SplitMode::Random,
        "equal" => SplitMode::Equal,
        _ => return Err(ApiError::invalid("mode must be random or equal")),
    };
    if u64::from(value.count) > value.total {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "limit_exceeded",
            "every share must be at least 1 fen",
        ));
    }
    let action = Action::CreateRedPacket {
        sender,
        total: check_amount(value.total)?,
        count: value.count,
        mode,
        greeting: value.greeting.clone(),
    };
    let outcome = state.submit(body.idempotency(caller), action).await?;
    let number = outcome_or_error!(outcome, Outcome::RedPacketCreated { number, .. } => number)?;
    red_packet_view(&state, number).map(|view| (StatusCode::CREATED, Json(view)))
}

fn red_packet_view(state: &AppState, number: RedPacketNumber) -> Result<RedPacketView, ApiError> {
    let packet =
        state.store.read(|p| p.red_packet(number).cloned()).ok_or_else(|| ApiError::not_found("red packet"))?;
    let claimed: Fen = packet.claims.iter().map(|&(_, amount)| amount).sum();
    Ok(RedPacketView {
        id: state.ids.format(IdKind::RedPacket, number),
        total: packet.total.get(),
        count: packet.shares.len() as u32,
        mode: if packet.mode == SplitMode::Random { "random" } else { "equal" }.to_string(),
        claimed: packet.claims.len() as u32,
        remaining: (packet.total - claimed - packet.returned).get(),
        expires_at: rfc3339(packet.expires_at),
    })
}

#[utoipa::path(get, path = "/v1/red-packets/{id}", tag = "marketing", params(("id" = String, Path, description = "rp_…")),
    responses((status = 200, body = RedPacketView), ReadErrors),
    security(("api_key" = [])))]
pub async fn get_red_packet(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<RedPacketView>, ApiError> {
    let number = RedPacketNumber::new(id_of(&state.ids, IdKind::RedPacket, &id, "red packet")?);
    let sender = state.store.read(|p| p.red_packet(number).map(|packet| packet.sender));
    match (caller, sender) {
        (Caller::Admin | Caller::Staff { .. }, Some(_)) => {}
        (Caller::Party { number: party, .. }, Some(sender)) if party == sender => {}
        _ => return Err(ApiError::not_found("red packet")),
    }
    Ok(Json(red_packet_view(&state, number)?))
}

#[utoipa::path(post, path = "/v1/red-packets/{id}/claims", tag = "marketing", params(("id" = String, Path, description = "rp_…")),
    responses((status = 201, body = Claim), ChangeErrors),
    security(("api_key" = [])))]
pub async fn claim(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    body: JsonBody<super::trades::EmptyBody>,
) -> Result<(StatusCode, Json<Claim>), ApiError> {
    let user = caller.require_party(&[PartyKind::User])?;
    let packet = RedPacketNumber::new(id_of(&state.ids, IdKind::RedPacket, &id, "red packet")?);
    let outcome = state.submit(body.idempotency(caller), Action::ClaimRedPacket { packet, user }).await?;
    let amount = outcome_or_error!(outcome, Outcome::RedPacketClaimed { amount, .. } => amount)?;
    Ok((StatusCode::CREATED, Json(Claim { amount: amount.get() })))
}
