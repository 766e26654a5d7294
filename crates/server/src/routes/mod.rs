//! The routes of the v1 API (`../shared/API.md`), one module per area, and
//! the OpenAPI document generated from them.

mod access;
pub(crate) mod disputes;
mod events;
pub(crate) mod finance;
pub(crate) mod freezes;
mod loans;
mod money;
mod operations;
pub(crate) mod parties;
mod products;
pub(crate) mod splits;
pub(crate) mod trades;

pub use parties::check_destination;

/// The body of each request that carries one, as the server reads it: what
/// a client in Rust (double11's HTTP driver, `bench http`) sends, so that
/// the wire format is written once.
pub mod requests {
    pub use super::loans::{NewAdvance, NewLoan, Repayment};
    pub use super::money::{NewTopUp, NewTransfer, NewWithdrawal};
    pub use super::operations::{ClockAdvance, FeeScheduleBody};
    pub use super::parties::{NewMerchant, NewUser};
    pub use super::products::{FundAmount, NewCampaignBody, NewCoupon, NewRedPacket, SubscriptionAmount, YieldRequest};
    pub use super::trades::{EmptyBody, NewTradeBody, PayBody, RefundBody};
}

use std::sync::Arc;

use axum::Router;
use axum::routing::{delete, get, post, put};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::app::AppState;
use crate::error::ApiError;
use crate::ids::{IdKind, PublicIds};

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/healthz", get(operations::healthz))
        .route("/readyz", get(operations::readyz))
        .route("/metrics", get(operations::metrics))
        .route("/openapi.json", get(operations::openapi))
        .route("/v1/users", post(parties::create_user))
        .route("/v1/users/{id}", get(parties::get_user))
        .route("/v1/merchants", post(parties::create_merchant))
        .route("/v1/merchants/{id}", get(parties::get_merchant))
        .route("/v1/balance", get(parties::balance))
        .route("/v1/statement", get(parties::statement))
        .route("/v1/balance-transactions", get(finance::balance_transactions))
        .route("/v1/bills", get(finance::bill))
        .route("/bills/alipay/{token}", get(crate::alipay_bill::download))
        .route("/v1/topups", post(money::create_topup))
        .route("/v1/withdrawals", post(money::create_withdrawal))
        .route("/v1/withdrawals/{id}", get(money::get_withdrawal))
        .route("/v1/transfers", post(money::create_transfer))
        .route("/v1/trades", post(trades::create_trade).get(trades::list_trades))
        .route("/v1/trades/{trade_no}", get(trades::get_trade))
        .route("/v1/trades/{trade_no}/pay", post(trades::pay))
        .route("/v1/trades/{trade_no}/ship", post(trades::ship))
        .route("/v1/trades/{trade_no}/confirm", post(trades::confirm))
        .route("/v1/trades/{trade_no}/close", post(trades::close))
        .route("/v1/trades/{trade_no}/refunds", post(trades::refund))
        .route("/v1/trades/{trade_no}/splits", post(splits::create_split).get(splits::list_splits))
        .route("/v1/royalty-relations", post(splits::bind_receiver).get(splits::list_receivers))
        .route("/v1/royalty-relations/{receiver}", delete(splits::unbind_receiver))
        .route("/v1/trades/{trade_no}/disputes", post(disputes::open))
        .route("/v1/freezes", post(freezes::create).get(freezes::list))
        .route("/v1/freezes/{id}", get(freezes::get))
        .route("/v1/freezes/{id}/unfreeze", post(freezes::unfreeze))
        .route("/v1/freezes/{id}/pay", post(freezes::pay_from))
        .route("/v1/disputes", get(disputes::list))
        .route("/v1/disputes/{id}", get(disputes::get))
        .route("/v1/disputes/{id}/accept", post(disputes::accept))
        .route("/v1/disputes/{id}/reject", post(disputes::reject))
        .route("/v1/disputes/{id}/escalate", post(disputes::escalate))
        .route("/v1/admin/disputes/{id}/decide", post(disputes::decide))
        .route("/v1/trades/{trade_no}/events", get(events::trade_events))
        .route("/v1/trades/{trade_no}/transfers", get(finance::trade_transfers))
        .route("/v1/events", get(events::list_events))
        .route("/v1/events/{id}", get(events::get_event))
        .route("/v1/takings", get(finance::takings))
        .route("/v1/refunds/{id}", get(trades::get_refund))
        .route("/v1/events/{id}/deliveries", get(events::deliveries))
        .route("/v1/events/{id}/resend", post(events::resend))
        .route("/v1/webhook-endpoints", post(events::create_endpoint).get(events::list_endpoints))
        .route("/v1/webhook-endpoints/{id}", delete(events::delete_endpoint))
        .route("/v1/webhook-endpoints/{id}/roll-secret", post(events::roll_secret))
        .route("/v1/api-keys", post(access::create_key))
        .route("/v1/api-keys/roll", post(access::roll_key))
        .route("/v1/admin/parties/{id}/revoke-keys", post(access::revoke_keys))
        .route("/v1/merchants/me/app-public-key", put(access::set_app_public_key))
        .route("/v1/admin/staff", post(access::create_staff).get(access::list_staff))
        .route("/v1/staff/sessions", post(access::sign_in))
        .route("/v1/staff/sessions/current", delete(access::sign_out))
        .route("/v1/admin/audit", get(access::audit))
        .route("/v1/credit", get(loans::credit))
        .route("/v1/loans", post(loans::take))
        .route("/v1/loans/{id}", get(loans::get))
        .route("/v1/loans/{id}/repayments", post(loans::repay))
        .route("/v1/trades/{trade_no}/advance", post(loans::advance))
        .route("/v1/admin/loans/portfolio", get(loans::portfolio))
        .route("/v1/admin/loan-terms", get(loans::loan_terms).put(loans::set_loan_terms))
        .route("/v1/fund", get(products::position))
        .route("/v1/fund/subscriptions", post(products::subscribe))
        .route("/v1/fund/redemptions", post(products::redeem))
        .route("/v1/admin/fund/yield", post(products::pay_yield))
        .route("/v1/campaigns", post(products::create_campaign).get(products::list_campaigns))
        .route("/v1/campaigns/{id}/pause", post(products::pause_campaign))
        .route("/v1/campaigns/{id}/resume", post(products::resume_campaign))
        .route("/v1/campaigns/{id}", get(products::get_campaign))
        .route("/v1/campaigns/{id}/coupons", post(products::issue_coupon))
        .route("/v1/red-packets", post(products::create_red_packet))
        .route("/v1/red-packets/{id}", get(products::get_red_packet))
        .route("/v1/red-packets/{id}/claims", post(products::claim))
        .route("/v1/admin/ledger/check", get(operations::ledger_check))
        .route("/v1/payment-codes", post(trades::create_payment_code))
        .route("/gateway.do", get(crate::gateway::gateway).post(crate::gateway::gateway))
        .route("/cashier", get(crate::cashier::show))
        .route("/cashier/sign-in", post(crate::cashier::sign_in))
        .route("/cashier/pay", post(crate::cashier::pay))
        .route("/cashier/sign-out", post(crate::cashier::sign_out))
        .route("/cashier/status", get(crate::cashier::status))
        .route("/cashier/qr.svg", get(crate::cashier::qr_image))
        .route("/cashier/style.css", get(crate::cashier::stylesheet))
        .route("/cashier/follow.js", get(crate::cashier::script))
        .route("/qr/{token}", get(crate::cashier::scanned))
        .route("/v1/admin/clock", post(operations::advance_clock))
        .route("/v1/admin/reconciliation", get(operations::reconciliation))
        .route("/v1/admin/fee-schedules", get(operations::fee_schedules))
        .route("/v1/admin/fee-schedules/{product}", put(operations::set_fee_schedule))
        .fallback(operations::not_found)
}

#[derive(OpenApi)]
#[openapi(
    info(title = "zhifu", description = "zhifu (支付): an Alipay-style payment platform. Amounts are integers in fen."),
    paths(
        operations::healthz, operations::readyz, operations::ledger_check, operations::advance_clock, operations::reconciliation,
        operations::fee_schedules, operations::set_fee_schedule,
        parties::create_user, parties::create_merchant, parties::get_user, parties::get_merchant,
        parties::balance, parties::statement, finance::balance_transactions, finance::bill,
        money::create_topup, money::create_withdrawal, money::get_withdrawal, money::create_transfer,
        trades::create_trade, trades::pay, trades::ship, trades::confirm, trades::close, trades::refund,
        trades::get_trade, trades::list_trades, trades::create_payment_code,
        events::list_events, events::get_event, finance::takings, trades::get_refund, events::deliveries, events::trade_events, finance::trade_transfers,
        splits::bind_receiver, splits::unbind_receiver, splits::list_receivers, splits::create_split, splits::list_splits,
        freezes::create, freezes::list, freezes::get, freezes::unfreeze, freezes::pay_from,
        disputes::open, disputes::get, disputes::list, disputes::accept, disputes::reject, disputes::escalate, disputes::decide,
        events::resend, events::create_endpoint, events::list_endpoints,
        events::delete_endpoint, events::roll_secret,
        access::roll_key, access::create_key, access::revoke_keys, access::set_app_public_key,
        access::create_staff, access::list_staff, access::sign_in, access::sign_out, access::audit,
        products::subscribe, products::redeem, products::position, products::pay_yield,
        products::create_campaign, products::get_campaign, products::issue_coupon, products::list_campaigns,
        products::pause_campaign, products::resume_campaign,
        products::create_red_packet, products::get_red_packet, products::claim,
        loans::credit, loans::take, loans::repay, loans::get, loans::portfolio, loans::advance,
        loans::loan_terms, loans::set_loan_terms,
    ),
    modifiers(&BearerKeys, &TextPatterns),
    tags((name = "parties"), (name = "money"), (name = "trades"), (name = "fund"), (name = "marketing"), (name = "loans"), (name = "splits"), (name = "disputes"), (name = "freezes"), (name = "events"), (name = "access"), (name = "operations"))
)]
pub struct ApiDoc;

struct BearerKeys;

impl Modify for BearerKeys {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The patterns of texts and URLs the platform checks (`platform::text`),
/// set on every property of those names, so the document states the rule
/// the code applies, from the one place that defines it.
struct TextPatterns;

impl Modify for TextPatterns {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{RefOr, Schema};
        let pattern_of = |property: &str| match property {
            "name" | "subject" | "bank" | "title" => Some(platform::text::DISPLAY_TEXT_PATTERN),
            "greeting" | "reason" | "memo" | "note" => Some(platform::text::OPTIONAL_TEXT_PATTERN),
            "webhook_url" | "notify_url" => Some(platform::text::WEB_URL_PATTERN),
            _ => None,
        };
        let Some(components) = openapi.components.as_mut() else { return };
        for schema in components.schemas.values_mut() {
            let RefOr::T(Schema::Object(object)) = schema else { continue };
            for (name, property) in object.properties.iter_mut() {
                if let (Some(pattern), RefOr::T(Schema::Object(property))) = (pattern_of(name), property) {
                    property.pattern = Some(pattern.to_string());
                }
            }
        }
    }
}

/// Turns an outcome into the expected value, or into the API error it means.
macro_rules! outcome_or_error {
    ($outcome:expr, $pattern:pat => $value:expr) => {
        match $outcome {
            $pattern => Ok($value),
            platform::Outcome::Rejected(rejection) => Err($crate::error::ApiError::from(rejection)),
            platform::Outcome::IdempotencyMismatch => Err($crate::error::ApiError::new(
                axum::http::StatusCode::CONFLICT,
                "idempotency_mismatch",
                "this Idempotency-Key was used with a different request",
            )),
            other => Err($crate::error::ApiError::internal(format!("unexpected outcome: {other:?}"))),
        }
    };
}
pub(crate) use outcome_or_error;

/// A page request: `limit` (1 to 100, default 20) and a cursor.
pub struct Page {
    pub limit: usize,
    pub after: Option<u64>,
}

/// The most items one page may ask for.
pub const PAGE_LIMIT_MAX: u32 = 100;

impl Page {
    /// `starting_after`, when given, must be an id of `kind`.
    pub fn from_params(
        limit: Option<u32>,
        starting_after: Option<&str>,
        ids: &PublicIds,
        kind: IdKind,
    ) -> Result<Page, ApiError> {
        let limit = limit.unwrap_or(20);
        if limit == 0 || limit > PAGE_LIMIT_MAX {
            return Err(ApiError::invalid("limit must be between 1 and 100"));
        }
        let after = match starting_after {
            None => None,
            Some(cursor) if !crate::ids::is_well_formed(kind, cursor) => {
                return Err(ApiError::invalid(format!(
                    "starting_after must be an id from this list ({}…)",
                    kind.prefix()
                )));
            }
            Some(cursor) => Some(ids.parse(kind, cursor).ok_or_else(|| ApiError::not_found("starting_after"))?),
        };
        Ok(Page { limit: limit as usize, after })
    }
}

/// The number of an id of `kind` in a path or body; another is `404 <what> not found`.
pub fn id_of(ids: &PublicIds, kind: IdKind, text: &str, what: &str) -> Result<u64, ApiError> {
    ids.parse(kind, text).ok_or_else(|| ApiError::not_found(what))
}

/// The errors a read may answer (the API's error shape; `../shared/API.md`,
/// Conventions), stated once for the OpenAPI document.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // a description for the document, never built
pub enum ReadErrors {
    #[response(status = 400, description = "`invalid_request`: a malformed id or query")]
    InvalidRequest(crate::error::ErrorBody),
    #[response(status = 401, description = "`unauthorized`: no key, or an unknown one")]
    Unauthorized(crate::error::ErrorBody),
    #[response(status = 403, description = "`forbidden`: this key may not do that")]
    Forbidden(crate::error::ErrorBody),
    #[response(status = 404, description = "`not_found`: no such object, or not the caller's")]
    NotFound(crate::error::ErrorBody),
    #[response(status = 409, description = "`conflict`")]
    Conflict(crate::error::ErrorBody),
    #[response(status = 413, description = "`payload_too_large`")]
    PayloadTooLarge(crate::error::ErrorBody),
    #[response(status = 429, description = "`rate_limited`")]
    RateLimited(crate::error::ErrorBody),
    #[response(status = 500, description = "`internal`: a fault of the server, logged under the request id")]
    Internal(crate::error::ErrorBody),
    #[response(status = 503, description = "`overloaded`, `unavailable` or `not_leader`: nothing was done")]
    Unavailable(crate::error::ErrorBody),
}

/// The errors a change may answer: a read's, and refusals of the change
/// itself (422), and a change whose outcome is not known yet (504).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // a description for the document, never built
pub enum ChangeErrors {
    #[response(status = 400, description = "`invalid_request`")]
    InvalidRequest(crate::error::ErrorBody),
    #[response(status = 401, description = "`unauthorized`: no key, or an unknown one")]
    Unauthorized(crate::error::ErrorBody),
    #[response(status = 403, description = "`forbidden`: this key may not do that")]
    Forbidden(crate::error::ErrorBody),
    #[response(status = 404, description = "`not_found`: no such object, or not the caller's")]
    NotFound(crate::error::ErrorBody),
    #[response(status = 409, description = "`conflict` or `idempotency_mismatch`")]
    Conflict(crate::error::ErrorBody),
    #[response(status = 413, description = "`payload_too_large`")]
    PayloadTooLarge(crate::error::ErrorBody),
    #[response(
        status = 422,
        description = "`insufficient_funds`, `limit_exceeded` or `budget_exhausted`: refused, nothing moved"
    )]
    Refused(crate::error::ErrorBody),
    #[response(status = 429, description = "`rate_limited`")]
    RateLimited(crate::error::ErrorBody),
    #[response(status = 500, description = "`internal`: a fault of the server, logged under the request id")]
    Internal(crate::error::ErrorBody),
    #[response(status = 503, description = "`overloaded`, `unavailable` or `not_leader`: nothing was done")]
    Unavailable(crate::error::ErrorBody),
    #[response(
        status = 504,
        description = "`outcome_unknown`: submitted, outcome not known yet; retry with the same Idempotency-Key"
    )]
    OutcomeUnknown(crate::error::ErrorBody),
}

/// The `Idempotency-Key` header a change may carry, stated once.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // a description for the document, never built
pub struct IdempotencyKey {
    /// Makes a retry safe: the same key and request get the first answer.
    #[param(rename = "Idempotency-Key", min_length = 1, max_length = 255, pattern = "^[ -~]+$")]
    key: Option<String>,
}
