//! Micro-loans: credit, loans, repayments, the portfolio.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use platform::{Action, Loan, LoanNumber, Outcome, PartyKind, TradeNumber};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ChangeErrors, IdempotencyKey, ReadErrors, id_of, outcome_or_error};
use crate::app::AppState;
use crate::auth::Caller;
use crate::body::{JsonBody, check_amount};
use crate::clock::rfc3339;
use crate::error::ApiError;
use crate::ids::{IdKind, PublicIds};

#[derive(Serialize, ToSchema)]
pub struct CreditView {
    pub limit: u64,
    pub used: u64,
    pub available: u64,
    pub daily_rate_bps: u32,
}

#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewLoan {
    #[serde(deserialize_with = "crate::body::whole")]
    #[schema(minimum = 1, maximum = 1_000_000_000_000_000_i64)]
    pub amount: u64,
    #[serde(deserialize_with = "crate::body::whole")]
    #[schema(minimum = 1, maximum = 365)]
    pub term_days: u32,
    /// Unique per merchant: a retry with the same fields returns the same loan.
    #[schema(min_length = 1, max_length = 64, pattern = "^[!-~]+$")]
    pub out_request_no: String,
}

#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Repayment {
    #[serde(deserialize_with = "crate::body::whole")]
    #[schema(minimum = 1, maximum = 1_000_000_000_000_000_i64)]
    pub amount: u64,
}

#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAdvance {
    /// Unique per merchant: a retry returns the same loan.
    #[schema(min_length = 1, max_length = 64, pattern = "^[!-~]+$")]
    pub out_request_no: String,
    /// The advance, in fen: at most the credit available and 80% of what the
    /// trade will pay (what escrow holds for it, less the fee). Default: that most.
    #[serde(default, deserialize_with = "crate::body::whole_option")]
    #[schema(minimum = 1, maximum = 1_000_000_000_000_000_i64)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amount: Option<u64>,
}

#[derive(Serialize, ToSchema)]
pub struct ScheduleLine {
    pub due_date: String,
    pub principal: u64,
    /// Interest for the whole term at the loan's rate, if nothing is repaid early.
    pub interest: u64,
    pub total: u64,
}

#[derive(Serialize, ToSchema)]
pub struct LoanView {
    pub id: String,
    /// `active`, `overdue` or `repaid`.
    pub status: String,
    /// Outstanding principal.
    pub principal: u64,
    pub original_principal: u64,
    /// Interest accrued and not yet repaid.
    pub accrued_interest: u64,
    pub penalties: u64,
    pub owed: u64,
    pub interest_accrued_total: u64,
    pub repaid_total: u64,
    pub daily_rate_bps: u32,
    pub term_days: u32,
    pub disbursed_at: String,
    pub due_date: String,
    pub schedule: Vec<ScheduleLine>,
}

fn loan_view(ids: &PublicIds, loan: &Loan) -> LoanView {
    let interest = platform::loans::daily(loan.principal, loan.daily_rate_bps).get() * u64::from(loan.term_days);
    LoanView {
        id: ids.format(IdKind::Loan, loan.number),
        status: loan.status.name().to_string(),
        principal: loan.outstanding_principal.get(),
        original_principal: loan.principal.get(),
        accrued_interest: loan.interest.get(),
        penalties: loan.penalties.get(),
        owed: loan.owed().get(),
        interest_accrued_total: loan.interest_accrued_total.get(),
        repaid_total: loan.repaid_total.get(),
        daily_rate_bps: loan.daily_rate_bps,
        term_days: loan.term_days,
        disbursed_at: rfc3339(loan.disbursed_at),
        due_date: rfc3339(loan.due_at),
        schedule: vec![ScheduleLine {
            due_date: rfc3339(loan.due_at),
            principal: loan.principal.get(),
            interest,
            total: loan.principal.get() + interest,
        }],
    }
}

#[derive(Serialize, ToSchema)]
pub struct PortfolioView {
    pub loans_active: u64,
    pub loans_overdue: u64,
    pub loans_repaid: u64,
    pub outstanding_principal: u64,
    pub outstanding_interest: u64,
    pub outstanding_penalties: u64,
    pub interest_earned: u64,
    pub penalties_earned: u64,
    /// Overdue principal by days past due.
    pub overdue_1_30: u64,
    pub overdue_31_60: u64,
    pub overdue_61_90: u64,
    pub overdue_over_90: u64,
}

#[utoipa::path(get, path = "/v1/credit", tag = "loans",
    responses((status = 200, body = CreditView), ReadErrors),
    security(("api_key" = [])))]
pub async fn credit(State(state): State<Arc<AppState>>, caller: Caller) -> Result<Json<CreditView>, ApiError> {
    let merchant = caller.require_party(&[PartyKind::Merchant])?;
    let now = state.clock.now();
    let credit = state.store.read(|p| p.credit(merchant, now));
    Ok(Json(CreditView {
        limit: credit.limit.get(),
        used: credit.used.get(),
        available: credit.available.get(),
        daily_rate_bps: credit.daily_rate_bps,
    }))
}

#[utoipa::path(post, path = "/v1/loans", tag = "loans", request_body = NewLoan,
    params(IdempotencyKey),
    responses((status = 201, body = LoanView), ChangeErrors),
    security(("api_key" = [])))]
pub async fn take(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    body: JsonBody<NewLoan>,
) -> Result<(StatusCode, Json<LoanView>), ApiError> {
    let merchant = caller.require_party(&[PartyKind::Merchant])?;
    let value = &body.value;
    let action = Action::TakeLoan {
        merchant,
        amount: check_amount(value.amount)?,
        term_days: value.term_days,
        out_request_no: value.out_request_no.clone(),
    };
    let outcome = state.submit(body.idempotency(caller), action).await?;
    let loan = outcome_or_error!(outcome, Outcome::LoanUpdated(loan) => loan)?;
    Ok((StatusCode::CREATED, Json(loan_view(&state.ids, &loan))))
}

#[utoipa::path(post, path = "/v1/trades/{trade_no}/advance", tag = "loans", request_body = NewAdvance,
    params(("trade_no" = String, Path, description = "trd_…: an escrow trade waiting for its buyer"), IdempotencyKey),
    responses((status = 201, body = LoanView), ChangeErrors),
    security(("api_key" = [])))]
/// An order loan: part of what a paid escrow trade will pay, now, within
/// the credit line; repaid from the trade's settlement first, and by any
/// refund of the trade first.
pub async fn advance(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(trade_no): Path<String>,
    body: JsonBody<NewAdvance>,
) -> Result<(StatusCode, Json<LoanView>), ApiError> {
    let merchant = caller.require_party(&[PartyKind::Merchant])?;
    let trade = TradeNumber::new(id_of(&state.ids, IdKind::Trade, &trade_no, "trade")?);
    let amount = body.value.amount.map(check_amount).transpose()?;
    let action = Action::TakeOrderLoan { merchant, trade, amount, out_request_no: body.value.out_request_no.clone() };
    let outcome = state.submit(body.idempotency(caller), action).await?;
    let loan = outcome_or_error!(outcome, Outcome::LoanUpdated(loan) => loan)?;
    Ok((StatusCode::CREATED, Json(loan_view(&state.ids, &loan))))
}

#[utoipa::path(post, path = "/v1/loans/{id}/repayments", tag = "loans", request_body = Repayment,
    params(("id" = String, Path, description = "loan_…"), IdempotencyKey),
    responses((status = 200, body = LoanView), ChangeErrors),
    security(("api_key" = [])))]
pub async fn repay(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    body: JsonBody<Repayment>,
) -> Result<Json<LoanView>, ApiError> {
    let merchant = caller.require_party(&[PartyKind::Merchant])?;
    let loan = LoanNumber::new(id_of(&state.ids, IdKind::Loan, &id, "loan")?);
    let action = Action::RepayLoan { loan, merchant, amount: check_amount(body.value.amount)? };
    let outcome = state.submit(body.idempotency(caller), action).await?;
    let loan = outcome_or_error!(outcome, Outcome::LoanUpdated(loan) => loan)?;
    Ok(Json(loan_view(&state.ids, &loan)))
}

#[utoipa::path(get, path = "/v1/loans/{id}", tag = "loans", params(("id" = String, Path, description = "loan_…")),
    responses((status = 200, body = LoanView), ReadErrors),
    security(("api_key" = [])))]
pub async fn get(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<LoanView>, ApiError> {
    let number = LoanNumber::new(id_of(&state.ids, IdKind::Loan, &id, "loan")?);
    let loan = state.store.read(|p| p.loan(number).cloned()).ok_or_else(|| ApiError::not_found("loan"))?;
    let visible = match caller {
        Caller::Admin | Caller::Staff { .. } => true,
        Caller::Party { number, .. } => loan.merchant == number,
    };
    if !visible {
        return Err(ApiError::not_found("loan"));
    }
    Ok(Json(loan_view(&state.ids, &loan)))
}

#[utoipa::path(get, path = "/v1/admin/loans/portfolio", tag = "loans",
    responses((status = 200, body = PortfolioView), ReadErrors),
    security(("api_key" = [])))]
pub async fn portfolio(State(state): State<Arc<AppState>>, caller: Caller) -> Result<Json<PortfolioView>, ApiError> {
    caller.require(crate::auth::Duty::Read)?;
    let now = state.clock.now();
    let p = state.store.read(|platform| platform.portfolio(now));
    Ok(Json(PortfolioView {
        loans_active: p.loans_active,
        loans_overdue: p.loans_overdue,
        loans_repaid: p.loans_repaid,
        outstanding_principal: p.outstanding_principal.get(),
        outstanding_interest: p.outstanding_interest.get(),
        outstanding_penalties: p.outstanding_penalties.get(),
        interest_earned: p.interest_earned.get(),
        penalties_earned: p.penalties_earned.get(),
        overdue_1_30: p.overdue_by_age[0].get(),
        overdue_31_60: p.overdue_by_age[1].get(),
        overdue_61_90: p.overdue_by_age[2].get(),
        overdue_over_90: p.overdue_by_age[3].get(),
    }))
}

/// The operator's lending terms: rates of new loans and how credit lines are drawn.
#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoanTermsBody {
    /// Interest of new loans, basis points a day (0 to 100).
    #[serde(deserialize_with = "crate::body::whole")]
    #[schema(minimum = 0, maximum = 100)]
    pub daily_rate_bps: u32,
    /// The extra daily rate past the due date of new loans (0 to 100).
    #[serde(deserialize_with = "crate::body::whole")]
    #[schema(minimum = 0, maximum = 100)]
    pub penalty_daily_rate_bps: u32,
    /// A credit line is this share of the merchant's average monthly settled volume (0 to 1000).
    #[serde(deserialize_with = "crate::body::whole")]
    #[schema(minimum = 0, maximum = 1000)]
    pub credit_multiple_percent: u64,
    /// No credit line exceeds this, in fen.
    #[serde(deserialize_with = "crate::body::whole")]
    #[schema(minimum = 0, maximum = 1_000_000_000_000_000_i64)]
    pub credit_cap: u64,
}

fn terms_view(terms: platform::loans::LoanTerms) -> LoanTermsBody {
    LoanTermsBody {
        daily_rate_bps: terms.daily_rate_bps,
        penalty_daily_rate_bps: terms.penalty_daily_rate_bps,
        credit_multiple_percent: terms.credit_multiple_percent,
        credit_cap: terms.credit_cap.get(),
    }
}

#[utoipa::path(get, path = "/v1/admin/loan-terms", tag = "loans",
    responses((status = 200, body = LoanTermsBody), ReadErrors),
    security(("api_key" = [])))]
pub async fn loan_terms(State(state): State<Arc<AppState>>, caller: Caller) -> Result<Json<LoanTermsBody>, ApiError> {
    caller.require(crate::auth::Duty::Read)?;
    Ok(Json(terms_view(state.store.read(|p| p.loan_terms()))))
}

#[utoipa::path(put, path = "/v1/admin/loan-terms", tag = "loans", request_body = LoanTermsBody,
    responses((status = 200, body = LoanTermsBody), ChangeErrors),
    security(("api_key" = [])))]
pub async fn set_loan_terms(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    request: crate::auth::RequestTag,
    body: JsonBody<LoanTermsBody>,
) -> Result<Json<LoanTermsBody>, ApiError> {
    caller.require_admin()?;
    let value = &body.value;
    let terms = platform::loans::LoanTerms {
        daily_rate_bps: value.daily_rate_bps,
        penalty_daily_rate_bps: value.penalty_daily_rate_bps,
        credit_multiple_percent: value.credit_multiple_percent,
        credit_cap: platform::Fen::new(value.credit_cap),
    };
    let what = platform::Target::Named("loan_terms".to_string());
    let action = crate::auth::audited(caller, &request, "loan_terms.set", what, Action::SetLoanTerms(terms));
    let outcome = state.submit(body.idempotency(caller), action).await?;
    outcome_or_error!(outcome, Outcome::Configured => ())?;
    Ok(Json(terms_view(state.store.read(|p| p.loan_terms()))))
}
