//! Errors on the wire: `{"error": {"code", "message"}}` with the status and
//! machine-readable code of the API contract. Client mistakes are never 5xx.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use platform::Rejection;
use platform::rejection::{Conflict, Invalid, Limit, Missing};
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// For the log, never for the client: what went wrong inside.
    detail: Option<String>,
    /// On a follower: the leader's `--public-url` (the `Zhifu-Leader` header).
    leader: Option<String>,
}

/// Seconds a client should wait before retrying a `503`.
pub const RETRY_AFTER_SECONDS: u64 = 1;

/// What a server fault was, for the request's log line (see `app::observe`).
#[derive(Clone, Debug)]
pub struct InternalDetail(pub String);

#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable: `invalid_request`, `unauthorized`, `forbidden`, `not_found`, `conflict`,
    /// `idempotency_mismatch`, `payload_too_large`, `request_timeout`, `insufficient_funds`,
    /// `limit_exceeded`, `rate_limited`, `internal`, `overloaded`, `unavailable`, `not_leader`,
    /// `outcome_unknown`.
    pub code: String,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), detail: None, leader: None }
    }

    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    pub fn unauthorized() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid API key is required (Authorization: Bearer <key>)",
        )
    }

    pub fn forbidden() -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", "this key may not do that")
    }

    pub fn not_found(what: &str) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("{what} not found"))
    }

    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// A fault of the server: `500 internal`, the detail only in the log.
    pub fn internal(detail: impl Into<String>) -> ApiError {
        let message = "the server failed to answer this request; it is logged under the request's x-request-id";
        ApiError {
            detail: Some(detail.into()),
            ..ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
        }
    }

    /// The queue of commands is full: nothing was done, retry later.
    pub fn overloaded() -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "the server is busy; nothing was done, retry later",
        )
    }

    /// The store cannot take writes (its journal failed): nothing was done.
    pub fn unavailable(detail: impl Into<String>) -> ApiError {
        let message = "the store cannot take this change now; nothing was done, retry later";
        ApiError {
            detail: Some(detail.into()),
            ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
        }
    }

    /// This node follows the store's leader: nothing was done here.
    pub fn not_leader(leader: Option<String>) -> ApiError {
        let message = "this node follows the store's leader: nothing was done; send the request to the leader";
        ApiError { leader, ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_leader", message) }
    }

    /// What the journal's refusal of a command means for the client.
    pub fn from_journal(error: journal::JournalError) -> ApiError {
        match error {
            journal::JournalError::Busy => ApiError::overloaded(),
            journal::JournalError::NotLeader { leader } => ApiError::not_leader(leader),
            // In the log: applied when the node starts again.
            journal::JournalError::LoggedNotApplied(_) => ApiError::outcome_unknown(),
            other => ApiError::unavailable(other.to_string()),
        }
    }

    /// The command reached the journal but the server stopped waiting for
    /// its outcome: it may have been applied.
    pub fn outcome_unknown() -> ApiError {
        ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "outcome_unknown",
            "the change was submitted but its outcome is not known yet; retry with the same Idempotency-Key \
             (or out_trade_no / out_request_no) to learn it",
        )
    }
}

impl From<Rejection> for ApiError {
    fn from(rejection: Rejection) -> ApiError {
        let message = describe(&rejection);
        match rejection {
            Rejection::InsufficientFunds => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "insufficient_funds", message)
            }
            Rejection::NotFound(what) => ApiError::not_found(missing_name(what)),
            Rejection::Invalid(_) => ApiError::invalid(message),
            Rejection::Conflict(_) => ApiError::conflict(message),
            Rejection::LimitExceeded(_) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "limit_exceeded", message),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { error: ErrorDetail { code: self.code.to_string(), message: self.message } };
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, RETRY_AFTER_SECONDS.into());
        }
        if let Some(detail) = self.detail {
            response.extensions_mut().insert(InternalDetail(detail));
        }
        if let Some(value) = self.leader.and_then(|leader| axum::http::HeaderValue::from_str(&leader).ok()) {
            response.headers_mut().insert("zhifu-leader", value);
        }
        response
    }
}

/// The words for a refusal, in the API's and the gateway's messages (the
/// state machine answers with codes only).
pub fn describe(rejection: &Rejection) -> String {
    match rejection {
        Rejection::InsufficientFunds => "the balance does not cover this".to_string(),
        Rejection::NotFound(what) => format!("{} not found", missing_name(*what)),
        Rejection::Invalid(Invalid::ImportCount) => {
            format!("count must be 1 to {}", platform::fund::IMPORT_HOLDERS_MAX)
        }
        Rejection::Invalid(what) => invalid_text(*what).to_string(),
        Rejection::Conflict(why) => conflict_text(why),
        Rejection::LimitExceeded(limit) => limit_text(*limit),
    }
}

/// What was not found, as a noun.
pub fn missing_name(what: Missing) -> &'static str {
    match what {
        Missing::Party => "party",
        Missing::User => "user",
        Missing::Merchant => "merchant",
        Missing::Buyer => "buyer",
        Missing::Recipient => "recipient",
        Missing::Sender => "sender",
        Missing::Sponsor => "sponsor",
        Missing::Trade => "trade",
        Missing::Campaign => "campaign",
        Missing::Coupon => "coupon",
        Missing::Loan => "loan",
        Missing::RedPacket => "red packet",
        Missing::Endpoint => "webhook endpoint",
        Missing::Key => "api key",
        Missing::Event => "event",
        Missing::Staff => "staff account",
        Missing::Dispute => "dispute",
        Missing::Freeze => "freeze",
    }
}

fn invalid_text(what: Invalid) -> &'static str {
    match what {
        Invalid::Amount => "amount must be between 1 and 10^15 fen",
        Invalid::OutTradeNo => "out_trade_no must be 1 to 64 visible ASCII characters",
        Invalid::RefundRequestNo => "out_request_no must be 1 to 64 visible ASCII characters",
        Invalid::LoanRequestNo => "out_request_no must be 1 to 64 characters",
        Invalid::SplitRequestNo => "out_request_no must be 1 to 64 visible ASCII characters",
        Invalid::SplitParts => "a split names 1 to 20 receivers",
        Invalid::LoanTerms => "daily rates at most 100 bp, a credit multiple at most 1000%, a cap at most 10^15 fen",
        Invalid::Reason => "reason must be at most 256 printable characters",
        Invalid::Subject => "subject must be 1 to 256 printable characters",
        Invalid::NotifyUrl => "notify_url must be an http or https URL with a host, of at most 2048 characters",
        Invalid::PassbackParams => "passback_params must be text of at most 512 characters",
        Invalid::AutoConfirmDays => "auto_confirm_days must be between 1 and 365",
        Invalid::ExpireMinutes => "expire_minutes must be between 1 and 43200",
        Invalid::PaymentCode => "a payment code is 18 digits with an expiry in the future",
        Invalid::PaymentCodeUnknown => "payment code unknown or already used",
        Invalid::PaymentCodeExpired => "payment code expired",
        Invalid::Subscription => "the smallest subscription is 100 fen (1 yuan)",
        Invalid::AnnualRate => "annual_rate_bps must be at most 10000",
        Invalid::ImportCount => "count is out of range",
        Invalid::LoanAmountOrTerm => "amount must be 1 to 10^15 fen and term_days 1 to 365",
        Invalid::RedPacketCount => "count must be between 1 and 1000",
        Invalid::RedPacketTotal => "total must give every share at least 1 fen, and be at most 10^15",
        Invalid::Greeting => "greeting must be at most 200 printable characters",
        Invalid::CampaignName | Invalid::PartyName => "name must be 1 to 200 printable characters",
        Invalid::BudgetOrDiscount => "budget must be 1 to 10^15 fen and discount at least 1 fen",
        Invalid::MinSpendOrPerUserLimit => "min_spend must be at most 10^15 fen and per_user_limit at least 1",
        Invalid::GatewayKey => "a gateway key is at most 8 KiB of PEM",
        Invalid::FeeRate => "rate_bps must be at most 10000",
        Invalid::PartyFeeRate => "fee_rate_bps must be at most 10000",
        Invalid::WebhookUrl => "webhook_url must be an http or https URL with a host",
        Invalid::Bank => "bank must be 1 to 32 printable characters",
        Invalid::LedgerBatch => "the ledger refused the batch whole",
        Invalid::FeeAmount => "minimum, maximum and free_quota.amount must be at most 10^15 fen",
        Invalid::Login => "login must be 1 to 64 letters, digits, '.', '_', '-' or '@'",
        Invalid::PasswordHash => "the password hash is not acceptable",
        Invalid::EventTypes => "events must be 1 to 32 event types (such as trade.paid), or [\"*\"]",
        Invalid::WebhookSecret => "a webhook secret must be 1 to 256 characters",
        Invalid::KeyExpiry => "expires_in_seconds must be at most 30 days",
        Invalid::AppPublicKey => "app_public_key must be at most 8 KiB of PEM",
        Invalid::AuditNote => "the audit note is not acceptable",
        Invalid::Freeze => {
            "out_order_no and out_request_no must be 1 to 64 visible ASCII characters, the title 1 to 256 printable characters"
        }
        Invalid::DisputeText => "reason and note must be 1 to 500 printable characters",
    }
}

fn conflict_text(why: &Conflict) -> String {
    let text = match why {
        Conflict::TradeNotPaid => "the trade is not paid",
        Conflict::TradeClosed => "the trade is closed",
        Conflict::TradeNotWaitingForPayment => "the trade is not waiting for payment",
        Conflict::TradeExpiredUnpaid => "the trade expired unpaid and is closed",
        Conflict::OnlyEscrowShips => "only escrow trades are shipped",
        Conflict::TradeNotWaitingToShip => "the trade is not waiting to be shipped",
        Conflict::OnlyEscrowConfirms => "only escrow trades are confirmed",
        Conflict::TradeNotWaitingForConfirmation => "the trade is not waiting for the buyer's confirmation",
        Conflict::OnlyUnpaidCloses => "only an unpaid trade can be closed",
        Conflict::TradeHoldsNoMoney => "the trade holds no money",
        Conflict::OutTradeNoUsed => "out_trade_no is used by another trade",
        Conflict::RefundRequestNoUsed => "out_request_no is used by a refund of another amount",
        Conflict::PaymentCodeIssued => "payment code already issued",
        Conflict::CouponUsed => "the coupon has been used",
        Conflict::CouponExpired => "the coupon has expired",
        Conflict::CouponOfAnotherMerchant => "the coupon is for another merchant",
        Conflict::CouponWouldExpireFirst => "the coupon would expire before it can be used",
        Conflict::DayNotEnded(date) => return format!("{date} has not ended yet"),
        Conflict::FundHoldingNotOpened => "the fund holding could not be opened",
        Conflict::LoanRequestNoUsed => "out_request_no is used by another loan",
        Conflict::AdvanceNeedsEscrowTrade => "advances are on paid escrow trades not yet settled",
        Conflict::AdvanceExists => "the trade has an advance already",
        Conflict::LoanAccountNotOpened => "the loan account could not be opened",
        Conflict::LoanRepaid => "the loan is repaid",
        Conflict::RedPacketClaimedAlready => "you have claimed this red packet already",
        Conflict::RedPacketExpired => "the red packet has expired",
        Conflict::RedPacketEmpty => "the red packet is empty",
        Conflict::CampaignDates => "ends_at must be after starts_at and in the future",
        Conflict::CampaignEnded => "the campaign has ended",
        Conflict::SplitRequestNoUsed => "out_request_no was used for another split of this trade",
        Conflict::TradeNotSettled => {
            "profit sharing is for trades whose money has reached the merchant (TRADE_SUCCESS)"
        }
        Conflict::ReceiverNotBound => "a receiver is not bound to this merchant (royalty relation)",
        Conflict::DisputeNeedsOpenEscrow => {
            "disputes are on paid escrow trades waiting for shipping or for the buyer's confirmation"
        }
        Conflict::DisputeOpen => "the trade has an open dispute",
        Conflict::DisputeStatus => "the dispute's status does not allow this",
        Conflict::FreezeOrderNoUsed => "out_order_no is used by another freeze",
        Conflict::FreezeRequestNoUsed => "out_request_no is used by another operation on this freeze",
        Conflict::FreezeNotOpen => "the freeze is finished or expired",
        Conflict::SecretMadeOnce => "the platform's secret is made once",
        Conflict::GatewayKeyMadeOnce => "the gateway's key is made once",
        Conflict::KeyInUse => "api key already in use",
        Conflict::LoginInUse => "login already in use",
        Conflict::WalletNotCreated => "wallet could not be created",
        Conflict::TransferToSelf => "cannot transfer to yourself",
        Conflict::LedgerRefused(code) => return format!("ledger refused the transfer: {code}"),
    };
    text.to_string()
}

fn limit_text(limit: Limit) -> String {
    match limit {
        Limit::RefundsPerTrade => {
            format!("a trade takes at most {} refunds", platform::REFUNDS_PER_TRADE_MAX)
        }
        Limit::Refundable { left } => {
            format!("refunds would exceed what the buyer paid: {left} fen can still be refunded")
        }
        Limit::TradeNumbers => "the platform has made all the trades it can".to_string(),
        Limit::Redemption { limit, left } => {
            format!("redemptions are limited to {limit} fen a day; {left} fen are left today")
        }
        Limit::Credit { available } => format!("the credit available is {available} fen"),
        Limit::Advance { most } => format!(
            "an advance on this trade is at most {most} fen (the credit available, and {}% of what the trade will pay)",
            platform::loans::ORDER_LOAN_SHARE_PERCENT
        ),
        Limit::Owed { owed } => format!("only {owed} fen is owed"),
        Limit::DiscountOverBudget => "the discount is larger than the budget".to_string(),
        Limit::Keys => format!("a party holds at most {} keys at once", platform::access::KEYS_PER_PARTY_MAX),
        Limit::Endpoints => {
            format!("a merchant has at most {} webhook endpoints", platform::access::ENDPOINTS_PER_MERCHANT_MAX)
        }
        Limit::Staff => format!("at most {} staff accounts", platform::access::STAFF_MAX),
        Limit::RoyaltyRelations => {
            format!("a merchant binds at most {} receivers", platform::splits::RELATIONS_PER_MERCHANT_MAX)
        }
        Limit::SplitsPerTrade => {
            format!("a trade takes at most {} split requests", platform::splits::SPLITS_PER_TRADE_MAX)
        }
        Limit::Splittable { left } => {
            format!("splits would exceed what the trade left the merchant: {left} fen can still be split")
        }
        Limit::Frozen { rest } => format!("more than the freeze holds: {rest} fen are frozen"),
        Limit::FreezeOperations => {
            format!("a freeze takes at most {} operations", platform::freezes::OPERATIONS_PER_FREEZE_MAX)
        }
        Limit::DisputesPerTrade => {
            format!("a trade takes at most {} disputes", platform::disputes::DISPUTES_PER_TRADE_MAX)
        }
    }
}
